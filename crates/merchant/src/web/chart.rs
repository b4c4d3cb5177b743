//! A bar chart as inline SVG, drawn on the server: one bar per bucket,
//! above the axis for net sales, below for net refunds.

use maud::{Markup, html};

const WIDTH: i64 = 720;
const HEIGHT: i64 = 200;
const AXIS_LABELS: i64 = 18;

/// Bars of `values`, labelled below by `labels` (every `label_every`-th)
/// and titled (hover text) by `titles`.
pub fn bars(values: &[i64], titles: &[String], labels: &[String], label_every: usize) -> Markup {
    let n = values.len().max(1) as i64;
    let plot = HEIGHT - AXIS_LABELS;
    let top = values
        .iter()
        .map(|v| v.saturating_abs())
        .max()
        .unwrap_or(0)
        .max(1);
    let has_negative = values.iter().any(|v| *v < 0);
    // With refunds the axis sits in the middle; otherwise at the bottom.
    let axis = if has_negative { plot / 2 } else { plot };
    let room = if has_negative { plot / 2 } else { plot } - 4;
    let slot = WIDTH / n;
    let bar = (slot * 3 / 4).max(1);
    html! {
        svg viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label="Net sales over the day" xmlns="http://www.w3.org/2000/svg" {
            line x1="0" y1=(axis) x2=(WIDTH) y2=(axis) stroke="#8a94a3" stroke-width="1" {}
            @for (i, v) in values.iter().enumerate() {
                @let height = (i128::from(v.saturating_abs()) * i128::from(room) / i128::from(top)) as i64;
                @let x = i as i64 * slot + (slot - bar) / 2;
                @let y = if *v >= 0 { axis - height } else { axis };
                rect x=(x) y=(y) width=(bar) height=(height) fill=(if *v >= 0 { "#2f6fde" } else { "#c2410c" }) {
                    title { (titles.get(i).map(String::as_str).unwrap_or("")) }
                }
                @if label_every > 0 && i % label_every == 0 {
                    text x=(i as i64 * slot) y=(HEIGHT - 4) font-size="11" fill="#4b5563" {
                        (labels.get(i).map(String::as_str).unwrap_or(""))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_largest_and_escape_their_text() {
        let svg = bars(
            &[0, 50, 100, -20],
            &["<a>".into(), "b".into(), "c".into(), "d".into()],
            &["00".into(), "06".into(), "12".into(), "18".into()],
            2,
        )
        .into_string();
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("&lt;a&gt;") && !svg.contains("<a>"));
        assert!(svg.contains(">00</text>") && svg.contains(">12</text>") && !svg.contains(">06<"));
        assert!(
            svg.contains("fill=\"#c2410c\""),
            "a refund bar below the axis"
        );
    }
}
