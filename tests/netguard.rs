//! One network guard for every address a client supplies: input images and webhooks refuse
//! the same addresses, and each opens exactly the networks its own allow-list names
//! (`inputs.allow_networks`, `webhooks.allow_networks`).

use easel::jobs::input_image::{InputFetcher, InputImageConfig};
use easel::webhooks::target::TargetGuard;

/// Loopback, private, link-local (cloud metadata), unique-local, IPv4-mapped, `localhost`
/// names, unspecified, multicast, CGNAT, broadcast, and an IPv4 address written as a number.
const REFUSED: &[&str] = &[
    "http://127.0.0.1/x",
    "http://127.1.2.3:8080/x",
    "http://[::1]/x",
    "http://10.0.0.8/x",
    "http://172.16.0.1/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/x",
    "http://[fd00::1]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://[::ffff:169.254.169.254]/x",
    "http://localhost/x",
    "http://LOCALHOST./x",
    "http://api.localhost/x",
    "http://0.0.0.0/x",
    "http://[::]/x",
    "http://224.0.0.1/x",
    "http://[ff02::1]/x",
    "http://100.64.0.1/x",
    "http://255.255.255.255/x",
    "http://2130706433/x",
];

const ACCEPTED: &[&str] = &[
    "https://example.com/x",
    "http://8.8.8.8/x",
    "http://[2606:4700::1111]/x",
    "https://localhost.example.com/x",
];

fn inputs(allow: &[&str]) -> InputFetcher {
    InputFetcher::new(InputImageConfig {
        allow_networks: allow.iter().map(|n| n.to_string()).collect(),
        ..InputImageConfig::default()
    })
    .expect("input fetcher")
}

fn webhooks(allow: &[&str]) -> TargetGuard {
    let allow: Vec<String> = allow.iter().map(|n| n.to_string()).collect();
    TargetGuard::new(&allow).expect("webhook guard")
}

/// What each guard says about `url`: `None` if it lets it through.
fn verdicts(
    inputs: &InputFetcher,
    webhooks: &TargetGuard,
    url: &str,
) -> (Option<String>, Option<String>) {
    (
        inputs.precheck(url).err().map(|e| e.code.to_owned()),
        webhooks.precheck(url).err().map(|e| e.message),
    )
}

#[test]
fn input_images_and_webhooks_refuse_the_same_addresses() {
    let (inputs, webhooks) = (inputs(&[]), webhooks(&[]));
    for url in REFUSED {
        let (input, webhook) = verdicts(&inputs, &webhooks, url);
        assert_eq!(
            input.as_deref(),
            Some("INPUT_IMAGE_FORBIDDEN_ADDRESS"),
            "{url}"
        );
        let webhook = webhook.unwrap_or_else(|| panic!("webhook accepted {url}"));
        assert!(webhook.contains("private, loopback"), "{url}: {webhook}");
    }
    for url in ACCEPTED {
        assert_eq!(verdicts(&inputs, &webhooks, url), (None, None), "{url}");
    }
}

#[test]
fn each_allow_list_opens_only_its_networks() {
    let allow = ["127.0.0.0/8", "::1", "169.254.169.254/32"];
    let (inputs, webhooks) = (inputs(&allow), webhooks(&allow));
    for url in [
        "http://127.0.0.1/x",
        "http://127.1.2.3:8080/x",
        "http://[::1]/x",
        "http://localhost/x",
        "http://api.localhost/x",
        "http://169.254.169.254/latest/meta-data",
    ] {
        assert_eq!(verdicts(&inputs, &webhooks, url), (None, None), "{url}");
    }
    for url in [
        "http://10.0.0.8/x",
        "http://[fd00::1]/x",
        "http://0.0.0.0/x",
    ] {
        let (input, webhook) = verdicts(&inputs, &webhooks, url);
        assert!(input.is_some() && webhook.is_some(), "{url}");
    }
    // One service's allow-list does not open the other's.
    let (strict_inputs, strict_webhooks) = (self::inputs(&[]), self::webhooks(&[]));
    let (input, _) = verdicts(&strict_inputs, &webhooks, "http://127.0.0.1/x");
    let (_, webhook) = verdicts(&inputs, &strict_webhooks, "http://127.0.0.1/x");
    assert!(input.is_some() && webhook.is_some());
    // A bad entry names its own setting.
    let bad = InputFetcher::new(InputImageConfig {
        allow_networks: vec!["nonsense".into()],
        ..InputImageConfig::default()
    })
    .err()
    .expect("refused");
    assert!(bad.contains("inputs.allow_networks"), "{bad}");
    let bad = TargetGuard::new(&["nonsense".into()]).expect_err("refused");
    assert!(bad.contains("webhooks.allow_networks"), "{bad}");
}
