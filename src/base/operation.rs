//! What a job does to make its result: the [`Operation`] (generate, edit, variation, upscale,
//! reroll, describe, outpaint, zoom out, blend), written as one string in requests and rows
//! (`"upscale:creative:4x"`), with the pure rules about what each one needs.
//! Must not touch: anything but its own parsing; providers decide how they perform each one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How far a variation strays from its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strength {
    Subtle,
    Strong,
}

/// An upscale that keeps the picture (`subtle`) or repaints details (`creative`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpscaleStyle {
    Subtle,
    Creative,
}

/// Which side an outpaint (Midjourney's pan) extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Left,
    Right,
    Up,
    Down,
}

/// The shape of a blend's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlendShape {
    Portrait,
    Square,
    Landscape,
}

/// One operation. The string form is `kind[:option[:option]]`; options may be left out for
/// their defaults (`variation` is `variation:subtle`, `upscale` is `upscale:subtle:2x`,
/// `zoom_out` is `zoom_out:2`, `blend` is `blend:square`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Operation {
    #[default]
    Generate,
    Edit,
    Variation(Strength),
    /// `factor` is 2 or 4.
    Upscale {
        style: UpscaleStyle,
        factor: u8,
    },
    Reroll,
    Describe,
    Outpaint(Direction),
    /// The canvas grows by `percent`/100 (150 = 1.5x, 200 = 2x; custom 101-200).
    ZoomOut {
        percent: u16,
    },
    Blend(BlendShape),
}

/// Every operation kind by name, for refusals.
pub const KINDS: &str =
    "generate, edit, variation, upscale, reroll, describe, outpaint, zoom_out, blend";

/// Images a blend takes.
pub const BLEND_IMAGES: std::ops::RangeInclusive<usize> = 2..=5;

impl Operation {
    /// The kind alone (`upscale`): what prices and capability lists name.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Generate => "generate",
            Operation::Edit => "edit",
            Operation::Variation(_) => "variation",
            Operation::Upscale { .. } => "upscale",
            Operation::Reroll => "reroll",
            Operation::Describe => "describe",
            Operation::Outpaint(_) => "outpaint",
            Operation::ZoomOut { .. } => "zoom_out",
            Operation::Blend(_) => "blend",
        }
    }

    pub fn is_generate(&self) -> bool {
        *self == Operation::Generate
    }

    /// Works on one source image (a parent job's image or an input image).
    pub fn needs_source_image(&self) -> bool {
        !matches!(
            self,
            Operation::Generate | Operation::Reroll | Operation::Blend(_)
        )
    }

    /// Its result is text (describe), not images.
    pub fn gives_text(&self) -> bool {
        *self == Operation::Describe
    }

    /// Parses the string form; the refusal says what is accepted.
    pub fn parse(raw: &str) -> Result<Operation, String> {
        let mut parts = raw.split(':');
        let kind = parts.next().unwrap_or("");
        let options: Vec<&str> = parts.collect();
        let bad = |what: &str| format!("operation '{raw}': {what}");
        let at_most = |n: usize| {
            if options.len() > n {
                Err(bad("too many options"))
            } else {
                Ok(())
            }
        };
        let op = match kind {
            "generate" | "imagine" => {
                at_most(0)?;
                Operation::Generate
            }
            "edit" => {
                at_most(0)?;
                Operation::Edit
            }
            "reroll" => {
                at_most(0)?;
                Operation::Reroll
            }
            "describe" => {
                at_most(0)?;
                Operation::Describe
            }
            "variation" => {
                at_most(1)?;
                Operation::Variation(match options.first().copied() {
                    None | Some("subtle") | Some("low") => Strength::Subtle,
                    Some("strong") | Some("high") => Strength::Strong,
                    Some(_) => return Err(bad("a variation is subtle or strong")),
                })
            }
            "upscale" => {
                at_most(2)?;
                let mut style = UpscaleStyle::Subtle;
                let mut factor = 2;
                for option in &options {
                    match *option {
                        "subtle" => style = UpscaleStyle::Subtle,
                        "creative" => style = UpscaleStyle::Creative,
                        "2x" => factor = 2,
                        "4x" => factor = 4,
                        _ => return Err(bad("an upscale is subtle or creative, 2x or 4x")),
                    }
                }
                Operation::Upscale { style, factor }
            }
            "outpaint" | "pan" => {
                at_most(1)?;
                Operation::Outpaint(match options.first().copied() {
                    Some("left") => Direction::Left,
                    Some("right") => Direction::Right,
                    Some("up") => Direction::Up,
                    Some("down") => Direction::Down,
                    _ => return Err(bad("an outpaint names left, right, up or down")),
                })
            }
            "zoom_out" => {
                at_most(1)?;
                let percent = match options.first() {
                    None => 200,
                    Some(f) => parse_zoom(f).ok_or_else(|| {
                        bad("a zoom out is 1.5, 2 or a custom factor above 1 up to 2")
                    })?,
                };
                Operation::ZoomOut { percent }
            }
            "blend" => {
                at_most(1)?;
                Operation::Blend(match options.first().copied() {
                    None | Some("square") => BlendShape::Square,
                    Some("portrait") => BlendShape::Portrait,
                    Some("landscape") => BlendShape::Landscape,
                    Some(_) => return Err(bad("a blend is portrait, square or landscape")),
                })
            }
            _ => return Err(format!("operation '{raw}' is not one of: {KINDS}")),
        };
        Ok(op)
    }

    /// The zoom factor as a float (1.5, 2.0).
    pub fn zoom_factor(percent: u16) -> f32 {
        f32::from(percent) / 100.0
    }
}

/// `1.5`, `2`, `2x`, `1.25`: a factor above 1 and at most 2, in hundredths.
fn parse_zoom(raw: &str) -> Option<u16> {
    let value: f32 = raw.trim_end_matches('x').parse().ok()?;
    let percent = (value * 100.0).round();
    (101.0..=200.0).contains(&percent).then_some(percent as u16)
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Variation(s) => write!(
                f,
                "variation:{}",
                match s {
                    Strength::Subtle => "subtle",
                    Strength::Strong => "strong",
                }
            ),
            Operation::Upscale { style, factor } => write!(
                f,
                "upscale:{}:{factor}x",
                match style {
                    UpscaleStyle::Subtle => "subtle",
                    UpscaleStyle::Creative => "creative",
                }
            ),
            Operation::Outpaint(d) => write!(
                f,
                "outpaint:{}",
                match d {
                    Direction::Left => "left",
                    Direction::Right => "right",
                    Direction::Up => "up",
                    Direction::Down => "down",
                }
            ),
            Operation::ZoomOut { percent } => {
                let whole = percent / 100;
                let rest = percent % 100;
                match rest {
                    0 => write!(f, "zoom_out:{whole}"),
                    r if r % 10 == 0 => write!(f, "zoom_out:{whole}.{}", r / 10),
                    r => write!(f, "zoom_out:{whole}.{r:02}"),
                }
            }
            Operation::Blend(shape) => write!(
                f,
                "blend:{}",
                match shape {
                    BlendShape::Portrait => "portrait",
                    BlendShape::Square => "square",
                    BlendShape::Landscape => "landscape",
                }
            ),
            other => f.write_str(other.kind()),
        }
    }
}

impl Serialize for Operation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Operation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Operation, D::Error> {
        let raw = String::deserialize(d)?;
        Operation::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_defaults() {
        for raw in [
            "generate",
            "edit",
            "variation:subtle",
            "variation:strong",
            "upscale:subtle:2x",
            "upscale:creative:4x",
            "reroll",
            "describe",
            "outpaint:left",
            "outpaint:down",
            "zoom_out:1.5",
            "zoom_out:2",
            "zoom_out:1.25",
            "blend:portrait",
            "blend:landscape",
        ] {
            let op = Operation::parse(raw).expect(raw);
            assert_eq!(op.to_string(), raw);
            let json = serde_json::to_string(&op).expect("json");
            assert_eq!(serde_json::from_str::<Operation>(&json).expect("back"), op);
        }
        assert_eq!(
            Operation::parse("variation").expect("ok"),
            Operation::Variation(Strength::Subtle)
        );
        assert_eq!(
            Operation::parse("upscale:4x").expect("ok").to_string(),
            "upscale:subtle:4x"
        );
        assert_eq!(
            Operation::parse("zoom_out").expect("ok"),
            Operation::ZoomOut { percent: 200 }
        );
        assert_eq!(
            Operation::parse("blend").expect("ok").to_string(),
            "blend:square"
        );
    }

    #[test]
    fn refusals_say_what_is_accepted() {
        for bad in [
            "paint",
            "upscale:8x",
            "outpaint",
            "zoom_out:3",
            "zoom_out:1",
            "variation:wild",
            "generate:x",
        ] {
            let err = Operation::parse(bad).expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn what_each_needs() {
        assert!(!Operation::Generate.needs_source_image());
        assert!(Operation::Describe.needs_source_image() && Operation::Describe.gives_text());
        assert!(!Operation::Blend(BlendShape::Square).needs_source_image());
        assert_eq!(Operation::ZoomOut { percent: 150 }.kind(), "zoom_out");
    }
}
