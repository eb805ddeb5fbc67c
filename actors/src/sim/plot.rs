//! Pictures of sweeps: the Pareto front of tokens/s against joules/token, as SVG (plotters'
//! SVG backend).

use plotters::prelude::*;

/// One configuration of a sweep, as plotted.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Label (e.g. `pi5x4, throughput, 4 streams`).
    pub label: String,
    /// Aggregate tokens/s.
    pub tokens_per_s: f64,
    /// Joules per token.
    pub joules_per_token: f64,
}

/// Indices of the Pareto-optimal points (no other point has more tokens/s for no more
/// joules/token, or fewer joules/token for no fewer tokens/s), in increasing joules/token.
pub fn pareto_front(points: &[Point]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].tokens_per_s.is_finite() && points[i].joules_per_token.is_finite())
        .collect();
    idx.sort_by(|&a, &b| {
        points[a]
            .joules_per_token
            .total_cmp(&points[b].joules_per_token)
            .then(points[b].tokens_per_s.total_cmp(&points[a].tokens_per_s))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in idx {
        if points[i].tokens_per_s > best {
            best = points[i].tokens_per_s;
            front.push(i);
        }
    }
    front
}

/// An SVG chart of `points` (joules/token across, tokens/s up) with their Pareto front.
pub fn pareto_svg(title: &str, points: &[Point]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let max_x = points
            .iter()
            .map(|p| p.joules_per_token)
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let max_y = points
            .iter()
            .map(|p| p.tokens_per_s)
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_x, 0.0..max_y)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("joules per token")
            .y_desc("tokens per second")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.joules_per_token, p.tokens_per_s), 4, BLUE.filled())),
            )
            .map_err(|e| e.to_string())?
            .label("configurations")
            .legend(|(x, y)| Circle::new((x, y), 4, BLUE.filled()));
        let front: Vec<(f64, f64)> = pareto_front(points)
            .into_iter()
            .map(|i| (points[i].joules_per_token, points[i].tokens_per_s))
            .collect();
        chart
            .draw_series(LineSeries::new(front.clone(), RED.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label("Pareto front")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], RED.stroke_width(2)));
        chart
            .draw_series(
                front.iter().zip(pareto_front(points)).map(|(&(x, y), i)| {
                    Text::new(points[i].label.clone(), (x, y), ("sans-serif", 12))
                }),
            )
            .map_err(|e| e.to_string())?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(label: &str, tps: f64, j: f64) -> Point {
        Point {
            label: label.into(),
            tokens_per_s: tps,
            joules_per_token: j,
        }
    }

    #[test]
    fn the_front_keeps_only_undominated_points() {
        let pts = [
            p("cheap-slow", 1.0, 1.0),
            p("dominated", 0.9, 2.0),
            p("mid", 2.0, 2.0),
            p("fast", 4.0, 5.0),
            p("worse-fast", 3.0, 6.0),
            p("tie-slower", 1.5, 2.0),
        ];
        assert_eq!(pareto_front(&pts), vec![0, 2, 3]);
        assert!(pareto_front(&[]).is_empty());
    }

    #[test]
    fn the_chart_is_svg_with_every_point() {
        let pts = [p("a", 1.0, 1.0), p("b", 2.0, 3.0), p("c", 1.5, 3.5)];
        let svg = pareto_svg("test", &pts).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Pareto front"));
        assert_eq!(
            svg.matches("<circle").count(),
            3 + 1,
            "three points and the legend's"
        );
    }
}
