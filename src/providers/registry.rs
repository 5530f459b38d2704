//! The one list of providers: [`BUILT_IN`] names every provider this build has, and a
//! [`Registry`] holds the ones a process built, by name, with the one new jobs use.
//!
//! Owns: which providers exist, building them from their configuration, and choosing the
//! default. Must not touch: keys or job state; the caller says which providers have keys when
//! the default is chosen ([`Registry::choose_default`]). Everything that needs "the providers"
//! (the worker, the key pool's probes, the command line) asks a registry instead of naming one.

use std::sync::Arc;

use super::{gemini, local, midjourney, openai, Provider, ProvidersConfig};

/// Builds one provider from the providers' configuration (it reads its own section).
pub type Constructor = fn(&ProvidersConfig) -> Result<Arc<dyn Provider>, String>;

/// Every provider this build has, in order of preference for the default. Adding a provider
/// is its folder plus one line here.
pub const BUILT_IN: &[Constructor] = &[
    local::LocalProvider::build,
    gemini::GeminiProvider::build,
    openai::OpenAiProvider::build,
    midjourney::MidjourneyProvider::build,
];

/// Providers by name, and which one new jobs use.
#[derive(Clone)]
pub struct Registry {
    /// In registration order: the default falls on the first that qualifies.
    providers: Vec<Arc<dyn Provider>>,
    default: &'static str,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("providers", &self.names().collect::<Vec<_>>())
            .field("default", &self.default)
            .finish()
    }
}

impl Registry {
    /// Every provider of [`BUILT_IN`], built from `config`; the default as
    /// [`Registry::choose_default`] picks it with no keys known yet.
    pub fn build(config: &ProvidersConfig) -> Result<Registry, String> {
        let providers = BUILT_IN
            .iter()
            .map(|build| build(config))
            .collect::<Result<Vec<_>, String>>()?;
        Registry::of(providers)
    }

    /// A registry of exactly `providers` (a test's own, say); the default is the first that
    /// needs no key, else the first.
    pub fn of(providers: Vec<Arc<dyn Provider>>) -> Result<Registry, String> {
        let registry = Registry {
            providers: Vec::new(),
            default: "",
        };
        let registry = providers.into_iter().fold(registry, Registry::with);
        registry.choose_default(None, |_| false)
    }

    /// Adds `provider`, replacing one of the same name. The default stays as it was (unless
    /// there was none); choose it again with [`Registry::choose_default`].
    pub fn with(mut self, provider: Arc<dyn Provider>) -> Registry {
        let name = provider.name();
        match self.providers.iter_mut().find(|p| p.name() == name) {
            Some(slot) => *slot = provider,
            None => self.providers.push(provider),
        }
        if self.default.is_empty() {
            self.default = name;
        }
        self
    }

    /// Sets the provider new jobs use: `wanted` if given (`providers.default`), otherwise the
    /// first provider that takes keys and `has_keys`, otherwise the first that needs no key
    /// (the local renderer is the default only when nothing else is configured).
    pub fn choose_default(
        mut self,
        wanted: Option<&str>,
        has_keys: impl Fn(&str) -> bool,
    ) -> Result<Registry, String> {
        let chosen = match wanted {
            Some(name) => self.get(name).ok_or_else(|| {
                format!(
                    "providers.default: unknown provider '{name}' (this build has: {})",
                    self.names().collect::<Vec<_>>().join(", ")
                )
            })?,
            None => self
                .providers
                .iter()
                .find(|p| p.capabilities().needs_key && has_keys(p.name()))
                .or_else(|| self.providers.iter().find(|p| !p.capabilities().needs_key))
                .or_else(|| self.providers.first())
                .cloned()
                .ok_or("no provider is registered")?,
        };
        self.default = chosen.name();
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Provider>> {
        self.providers.iter().find(|p| p.name() == name).cloned()
    }

    pub fn default_name(&self) -> &'static str {
        self.default
    }

    /// Every provider's name, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.providers.iter().map(|p| p.name())
    }

    /// The providers that take upstream keys, in registration order.
    pub fn keyed(&self) -> impl Iterator<Item = &Arc<dyn Provider>> + '_ {
        self.providers.iter().filter(|p| p.capabilities().needs_key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;

    use super::*;
    use crate::providers::{
        Capabilities, GenerateOutput, GenerateRequest, ProviderError, UpstreamCredential,
    };

    /// A provider that only has a name and says whether it takes keys.
    struct Named(&'static str, Capabilities);

    fn named(name: &'static str, needs_key: bool) -> Arc<dyn Provider> {
        Arc::new(Named(
            name,
            Capabilities {
                modes: Vec::new(),
                image_to_image: false,
                max_images: 1,
                aspect_ratios: Vec::new(),
                image_sizes: Vec::new(),
                needs_key,
            },
        ))
    }

    #[async_trait]
    impl Provider for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn capabilities(&self) -> &Capabilities {
            &self.1
        }
        fn call_timeout(&self) -> Duration {
            Duration::from_secs(1)
        }
        async fn probe(&self, _: &UpstreamCredential) -> Result<(), ProviderError> {
            Ok(())
        }
        async fn generate(
            &self,
            _: &GenerateRequest,
            _: Option<&UpstreamCredential>,
        ) -> Result<GenerateOutput, ProviderError> {
            Ok(GenerateOutput::default())
        }
    }

    fn three() -> Registry {
        Registry::of(vec![
            named("keyed-a", true),
            named("free", false),
            named("keyed-b", true),
        ])
        .expect("registry")
    }

    #[test]
    fn the_default_is_the_first_keyed_provider_with_keys_else_the_first_free_one() {
        assert_eq!(three().default_name(), "free");
        let chosen = three().choose_default(None, |p| p == "keyed-b").unwrap();
        assert_eq!(chosen.default_name(), "keyed-b");
        let chosen = three().choose_default(None, |_| true).unwrap();
        assert_eq!(chosen.default_name(), "keyed-a");
        let chosen = three().choose_default(Some("keyed-b"), |_| false).unwrap();
        assert_eq!(chosen.default_name(), "keyed-b");
        let unknown = three().choose_default(Some("dalle"), |_| true).unwrap_err();
        assert!(unknown.contains("unknown provider 'dalle'"), "{unknown}");
        assert!(Registry::of(Vec::new()).is_err());
    }

    #[test]
    fn adding_a_provider_keeps_the_order_and_replaces_one_of_the_same_name() {
        let registry = three().with(named("extra", true)).with(named("free", true));
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            ["keyed-a", "free", "keyed-b", "extra"]
        );
        let keyed: Vec<_> = registry.keyed().map(|p| p.name()).collect();
        assert_eq!(keyed, ["keyed-a", "free", "keyed-b", "extra"]);
        assert_eq!(registry.default_name(), "free", "the default stays");
    }

    #[test]
    fn every_built_in_provider_is_built_from_the_default_configuration() {
        let registry = Registry::build(&ProvidersConfig::default()).expect("build");
        assert_eq!(registry.names().count(), BUILT_IN.len());
        assert_eq!(registry.default_name(), "local");
        assert_eq!(
            registry.keyed().map(|p| p.name()).collect::<Vec<_>>(),
            ["gemini", "openai", "midjourney"]
        );
    }
}
