//! The pictures, decoded as a reader's program would: sizes, where a spot
//! lands, the colour bar, the ROI outline, the numbers in the PNG text, the
//! SVG's text, and byte-for-byte reproducibility.
//! Set PICTURE_DIR to keep the rendered files for a look.

use braggrun::io::picture::{
    convergence_plot, derivative_png, detector_png, difference_png, embed_roi, line_plot_png,
    line_plot_svg, png_text, scaling_plot, DetectorOptions, DifferenceOptions, Frame, Scale,
    Series, SignedOptions, SignedRange, Top,
};

/// A decoded RGB picture.
struct Pic {
    w: usize,
    h: usize,
    rgb: Vec<u8>,
    text: Vec<(String, String)>,
}

impl Pic {
    fn decode(bytes: &[u8]) -> Pic {
        let dec = png::Decoder::new(bytes);
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        assert_eq!(info.bit_depth, png::BitDepth::Eight);
        buf.truncate(info.buffer_size());
        Pic {
            w: info.width as usize,
            h: info.height as usize,
            rgb: buf,
            text: png_text(bytes).unwrap(),
        }
    }
    fn px(&self, x: usize, y: usize) -> [u8; 3] {
        assert!(
            x < self.w && y < self.h,
            "({x}, {y}) outside {} x {}",
            self.w,
            self.h
        );
        let i = (y * self.w + x) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }
    fn meta(&self, key: &str) -> &str {
        self.text
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no PNG text {key:?} in {:?}", self.text))
    }
    fn num(&self, key: &str) -> f64 {
        self.meta(key).parse().unwrap()
    }
    /// `x y w h` of a named area.
    fn area(&self, key: &str) -> [usize; 4] {
        let v: Vec<usize> = self
            .meta(key)
            .split(' ')
            .map(|s| s.parse().unwrap())
            .collect();
        let a = [v[0], v[1], v[2], v[3]];
        assert!(
            a[0] + a[2] <= self.w && a[1] + a[3] <= self.h,
            "{key} {a:?}"
        );
        a
    }
}

/// The contents of an SVG's `<text>` elements, trimmed.
fn svg_texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .map(|t| {
            let body = &t[t.find('>').unwrap() + 1..];
            body[..body.find("</text>").unwrap()].trim().to_string()
        })
        .collect()
}

/// Non-increasing but for the rounding of single channels (one unit per
/// step), and strictly falling over every 8 steps.
fn falls(v: &[f64]) -> bool {
    v.windows(2).all(|w| w[1] <= w[0] + 1.0) && v.windows(9).all(|w| w[8] < w[0])
}

fn lum(c: [u8; 3]) -> f64 {
    0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64
}

fn keep(name: &str, bytes: &[u8]) {
    if let Ok(dir) = std::env::var("PICTURE_DIR") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(name), bytes).unwrap();
    }
}

/// 1024 x 1024, faint background, one bright pixel at fast 700, slow 300.
fn spot_image() -> Vec<f64> {
    let mut d = vec![0.01; 1024 * 1024];
    d[300 * 1024 + 700] = 1000.0;
    d
}

#[test]
fn detector_spot_lands_in_place_after_max_pooling() {
    let d = spot_image();
    let opts = DetectorOptions {
        title: "spot".into(),
        ..Default::default()
    };
    let bytes = detector_png(Frame::new(&d, 1024, 1024).unwrap(), &opts).unwrap();
    keep("detector_spot.png", &bytes);
    let p = Pic::decode(&bytes);
    let [x0, y0, w, h] = p.area("image_area");
    assert_eq!((w, h), (512, 512), "1024 pooled 2 x 2");
    assert!(p.meta("display").contains("pooled 2 x 2"));
    assert!(p.meta("Description").contains("pooled 2 x 2"));
    // The spot (one detector pixel) survives pooling as one bright picture pixel.
    let spot = p.px(x0 + 350, y0 + 150);
    assert!(lum(spot) > 230.0, "spot {spot:?}");
    // Not transposed, not flipped; background dark.
    for (x, y) in [
        (150, 350),
        (350, 512 - 1 - 150),
        (512 - 1 - 350, 150),
        (340, 150),
    ] {
        assert!(
            lum(p.px(x0 + x, y0 + y)) < 60.0,
            "({x}, {y}) {:?}",
            p.px(x0 + x, y0 + y)
        );
    }
    // Numbers read back exactly.
    assert_eq!(p.num("value_min"), 0.01);
    assert_eq!(p.num("value_max"), 1000.0);
    assert_eq!(p.num("colour_max"), 1000.0);
    assert!((p.num("colour_min") - 1000.0 * 1e-5).abs() < 1e-12);
    assert!(p.meta("scale").starts_with("log10"), "{}", p.meta("scale"));
    assert_eq!(p.meta("units"), "intensity (photons/pixel)");
    assert_eq!(p.meta("Title"), "spot");
    assert_eq!(
        (p.meta("fast_pixels"), p.meta("slow_pixels")),
        ("1024", "1024")
    );
}

#[test]
fn colour_bar_is_a_monotone_ramp() {
    let d = spot_image();
    let p = Pic::decode(
        &detector_png(Frame::new(&d, 1024, 1024).unwrap(), &Default::default()).unwrap(),
    );
    let [bx, by, bw, bh] = p.area("colour_bar_area");
    let col: Vec<f64> = (by..by + bh).map(|y| lum(p.px(bx + bw / 2, y))).collect();
    assert!(falls(&col), "brightest at the top: {col:?}");
    assert!(
        col[0] - col[bh - 1] > 200.0,
        "{} .. {}",
        col[0],
        col[bh - 1]
    );
    // Tick labels (dark text) right of the bar.
    let dark = (by..by + bh)
        .flat_map(|y| (bx + bw + 2..bx + bw + 60).map(move |x| (x, y)))
        .filter(|&(x, y)| lum(p.px(x, y)) < 100.0)
        .count();
    assert!(dark > 50, "tick labels drawn ({dark} dark pixels)");
    // The image area is left of the bar, not overlapping it.
    let [x0, _, w, _] = p.area("image_area");
    assert!(x0 + w < bx);
}

#[test]
fn roi_is_outlined_and_small_roi_enlarged() {
    let d = spot_image();
    let opts = DetectorOptions {
        roi: Some([700, 701, 300, 301]),
        ..Default::default()
    };
    let bytes = detector_png(Frame::new(&d, 1024, 1024).unwrap(), &opts).unwrap();
    keep("detector_roi.png", &bytes);
    let p = Pic::decode(&bytes);
    let cyan = [0, 255, 255];
    let [x0, y0, _, _] = p.area("image_area");
    // ROI pixels 700..701 x 300..301 are picture pixel (350, 150); the
    // outline runs two pixels wide just outside it.
    for (x, y) in [
        (348, 150),
        (349, 150),
        (351, 150),
        (352, 150),
        (350, 148),
        (350, 152),
    ] {
        assert_eq!(p.px(x0 + x, y0 + y), cyan, "({x}, {y})");
    }
    assert_ne!(
        p.px(x0 + 350, y0 + 150),
        cyan,
        "the ROI itself stays visible"
    );
    assert_eq!(p.meta("roi"), "700 701 300 301");
    // A 2 x 2 ROI gets an enlarged view of its neighbourhood, outlined too.
    assert_eq!(p.meta("zoom_region"), "685 716 285 316");
    let [zx, zy, zw, _] = p.area("zoom_area");
    assert_eq!(zw, 320, "32 pixels enlarged 10 x");
    // ROI fast 700 is (700 - 685) * 10 = 150 picture pixels in.
    assert_eq!(p.px(zx + 149, zy + 160), cyan);
    assert!(lum(p.px(zx + 155, zy + 155)) > 230.0, "the spot, enlarged");
    assert!(lum(p.px(zx + 175, zy + 175)) < 60.0);
}

#[test]
fn large_roi_is_outlined_without_zoom() {
    let d = spot_image();
    let opts = DetectorOptions {
        roi: Some([100, 299, 600, 799]),
        scale: Scale::Linear,
        top: Top::Percentile(99.0),
        ..Default::default()
    };
    let p = Pic::decode(&detector_png(Frame::new(&d, 1024, 1024).unwrap(), &opts).unwrap());
    let [x0, y0, _, _] = p.area("image_area");
    assert_eq!(p.px(x0 + 49, y0 + 350), [0, 255, 255]);
    assert_eq!(p.px(x0 + 150, y0 + 299), [0, 255, 255]);
    assert_eq!(p.px(x0 + 150, y0 + 400), [0, 255, 255]);
    assert!(!p.text.iter().any(|(k, _)| k == "zoom_area"));
    assert!(p.meta("scale").starts_with("linear"));
    // Percentile 99 of a flat 0.01 background is the bottom: the maximum is used.
    assert_eq!(p.num("colour_max"), 1000.0);
}

#[test]
fn pictures_are_deterministic() {
    let d = spot_image();
    let f = Frame::new(&d, 1024, 1024).unwrap();
    let opts = DetectorOptions {
        roi: Some([10, 20, 30, 40]),
        ..Default::default()
    };
    let a = detector_png(f, &opts).unwrap();
    assert_eq!(a, detector_png(f, &opts).unwrap());
    let plot = convergence_plot("fit", &[1.0, 0.1, 0.01]);
    assert_eq!(line_plot_svg(&plot).unwrap(), line_plot_svg(&plot).unwrap());
    assert_eq!(line_plot_png(&plot).unwrap(), line_plot_png(&plot).unwrap());
}

#[test]
fn derivative_map_is_symmetric_with_sign_colours() {
    // 64 x 48 detector: + spot at (10, 5), - spot at (50, 40), zero elsewhere.
    let mut d = vec![0.0; 64 * 48];
    d[5 * 64 + 10] = 4.0;
    d[40 * 64 + 50] = -2.0;
    let opts = SignedOptions {
        title: "dI/d cell_a".into(),
        units: "dI/d cell_a (photons/pixel per Å)".into(),
        ..Default::default()
    };
    let bytes = derivative_png(Frame::new(&d, 64, 48).unwrap(), &opts).unwrap();
    keep("derivative.png", &bytes);
    let p = Pic::decode(&bytes);
    let [x0, y0, w, h] = p.area("image_area");
    let z = w / 64;
    assert_eq!((z, h), (12, 48 * 12), "enlarged 12 x");
    let at = |f: usize, s: usize| p.px(x0 + f * z + z / 2, y0 + s * z + z / 2);
    let red = at(10, 5);
    let blue = at(50, 40);
    assert!(red[0] > 150 && red[2] < 60, "{red:?}");
    assert!(blue[2] > 200 && blue[0] < 150, "{blue:?}");
    assert_eq!(at(30, 20), [255, 255, 255], "zero is white");
    assert_eq!(p.num("colour_max"), 4.0);
    assert_eq!(p.num("colour_min"), -4.0);
    assert_eq!(p.num("value_min"), -2.0);
    assert!(p.meta("scale").contains("±4"), "{}", p.meta("scale"));
    assert!(p.meta("units").contains("Å"));
    // Bar: red at the top, white in the middle, blue at the bottom.
    let [bx, by, bw, bh] = p.area("colour_bar_area");
    let rb: Vec<f64> = (by..by + bh)
        .map(|y| {
            let c = p.px(bx + bw / 2, y);
            c[0] as f64 - c[2] as f64
        })
        .collect();
    assert!(falls(&rb), "red minus blue falls downwards: {rb:?}");
    assert!(rb[0] > 100.0 && rb[bh - 1] < -100.0);
    assert_eq!(p.px(bx + bw / 2, by + bh / 2), [255, 255, 255]);
}

#[test]
fn derivative_of_roi_shown_in_full_detector_context() {
    let full = embed_roi(200, 100, [120, 121, 40, 41], &[1.0, -1.0, 0.5, 0.0]).unwrap();
    let opts = SignedOptions {
        roi: Some([120, 121, 40, 41]),
        range: SignedRange::Percentile(50.0),
        ..Default::default()
    };
    let bytes = derivative_png(Frame::new(&full, 200, 100).unwrap(), &opts).unwrap();
    keep("derivative_roi.png", &bytes);
    let p = Pic::decode(&bytes);
    let [x0, y0, w, _] = p.area("image_area");
    assert_eq!(w, 200 * 3);
    assert_eq!(p.px(x0 + 10, y0 + 10), [128, 128, 128], "no value: grey");
    assert_eq!(p.num("no_value_pixels"), (200 * 100 - 4) as f64);
    assert!(p.meta("Description").contains("grey: no value"));
    // Percentile 50 of |1|, |-1|, |0.5| (non-zero) is 1.
    assert_eq!(p.num("colour_max"), 1.0);
    let zx = p.area("zoom_area")[0];
    assert!(zx > x0 + w, "the enlarged view is beside the detector");
}

#[test]
fn difference_is_scaled_to_the_reference_maximum() {
    let b = spot_image();
    // A relative difference of 3e-8 everywhere: nothing to see.
    let a: Vec<f64> = b.iter().map(|v| v * (1.0 + 3e-8)).collect();
    let f = |d| Frame::new(d, 1024, 1024).unwrap();
    let bytes = difference_png(f(&a), f(&b), &DifferenceOptions::default()).unwrap();
    keep("difference_tiny.png", &bytes);
    let p = Pic::decode(&bytes);
    let [x0, y0, w, h] = p.area("image_area");
    for y in (y0..y0 + h).step_by(7) {
        for x in (x0..x0 + w).step_by(7) {
            assert_eq!(p.px(x, y), [255, 255, 255], "({x}, {y})");
        }
    }
    assert_eq!(
        p.px(x0 + 350, y0 + 150),
        [255, 255, 255],
        "even at the peak"
    );
    assert_eq!(p.num("reference_max_abs"), 1000.0);
    let rel = p.num("max_relative_difference");
    assert!((rel - 3e-8).abs() < 1e-12, "{rel}");
    assert_eq!(p.meta("units"), "(a - b) / max|reference|");
    assert_eq!(p.num("colour_max"), 1e-3);

    // A real mismatch at the peak (1 % of it) saturates red there.
    let mut a2 = b.clone();
    a2[300 * 1024 + 700] += 10.0;
    let p = Pic::decode(&difference_png(f(&a2), f(&b), &Default::default()).unwrap());
    let c = p.px(x0 + 350, y0 + 150);
    assert_eq!(c, [178, 24, 43], "full red");
    assert!(p.meta("Description").contains("saturate"));
}

#[test]
fn bad_input_is_refused_with_reasons() {
    let d = vec![1.0; 12];
    assert!(Frame::new(&d, 5, 3).unwrap_err().contains("12 values"));
    let f = Frame::new(&d, 4, 3).unwrap();
    let roi = DetectorOptions {
        roi: Some([0, 4, 0, 0]),
        ..Default::default()
    };
    assert!(detector_png(f, &roi).unwrap_err().contains("not inside"));
    let nan = vec![f64::NAN; 12];
    let e = detector_png(Frame::new(&nan, 4, 3).unwrap(), &Default::default()).unwrap_err();
    assert!(e.contains("no finite value"), "{e}");
    let g = Frame::new(&d[..6], 3, 2).unwrap();
    assert!(difference_png(f, g, &Default::default())
        .unwrap_err()
        .contains("differ in size"));
    let a = ndarray::Array2::<f64>::zeros((3, 4));
    let fa = Frame::from_array(a.view()).unwrap();
    assert_eq!((fa.width, fa.height), (4, 3));
    assert!(Frame::from_array(a.t()).is_err(), "column-major refused");
}

#[test]
fn svg_plots_carry_title_axes_and_legend_as_text() {
    let plot = convergence_plot("refinement of cell_a", &[10.0, 1.0, 0.05, 0.0009, 0.0]);
    let svg = line_plot_svg(&plot).unwrap();
    keep("convergence.svg", svg.as_bytes());
    keep("convergence.png", &line_plot_png(&plot).unwrap());
    let texts = svg_texts(&svg);
    for s in [
        "refinement of cell_a",
        "iteration",
        "loss (log scale)",
        "loss",
        "0.001",
        "10",
    ] {
        assert!(texts.iter().any(|t| t == s), "{s:?} missing from {texts:?}");
    }
    assert!(texts.iter().any(|t| t.starts_with("1 point(s) left out")));
    assert!(svg.starts_with("<svg"));

    let plot = scaling_plot(
        "CPU scaling",
        "threads",
        "pixel-samples/s",
        vec![
            Series {
                name: "cpu f64".into(),
                points: vec![(1.0, 1e6), (2.0, 1.9e6), (4.0, 3.6e6), (8.0, 6e6)],
            },
            Series {
                name: "cpu f32 & fast".into(),
                points: vec![(1.0, 2e6), (2.0, 3.8e6), (4.0, 7e6), (8.0, 1.1e7)],
            },
        ],
    );
    let svg = line_plot_svg(&plot).unwrap();
    keep("scaling.svg", svg.as_bytes());
    let texts = svg_texts(&svg);
    for s in [
        "CPU scaling",
        "threads (log scale)",
        "pixel-samples/s (log scale)",
        "cpu f64",
        "cpu f32 &amp; fast",
        "1e6",
        "2e6",
        "5e6",
        "1e7",
        "1",
        "8",
    ] {
        assert!(texts.iter().any(|t| t == s), "{s:?} missing from {texts:?}");
    }
    let png = line_plot_png(&plot).unwrap();
    keep("scaling.png", &png);
    let p = Pic::decode(&png);
    assert_eq!((p.w, p.h), (800, 500));
    assert_eq!(p.meta("Title"), "CPU scaling");
    assert_eq!(p.meta("x_label"), "threads");
    // Both series' colours appear (tab10 blue and orange).
    let has = |c: [u8; 3]| p.rgb.chunks_exact(3).any(|q| q == c);
    assert!(has([31, 119, 180]) && has([255, 127, 14]));
}

#[test]
fn wide_detector_keeps_corners_in_their_corners() {
    // 3000 fast x 2000 slow: pooled 4 x 4 to 750 x 500.
    let (w, h) = (3000, 2000);
    let mut d = vec![0.0; w * h];
    d[w - 1] = 5.0; // fast 2999, slow 0: top right
    d[(h - 1) * w] = 5.0; // fast 0, slow 1999: bottom left
    let t = std::time::Instant::now();
    let bytes = detector_png(Frame::new(&d, w, h).unwrap(), &Default::default()).unwrap();
    assert!(t.elapsed().as_secs() < 30, "{:?}", t.elapsed());
    keep("wide.png", &bytes);
    let p = Pic::decode(&bytes);
    let [x0, y0, dw, dh] = p.area("image_area");
    assert_eq!((dw, dh), (750, 500));
    assert!(p.meta("display").contains("pooled 4 x 4"));
    assert!(lum(p.px(x0 + 749, y0)) > 230.0);
    assert!(lum(p.px(x0, y0 + 499)) > 230.0);
    assert!(lum(p.px(x0, y0)) < 60.0 && lum(p.px(x0 + 749, y0 + 499)) < 60.0);
}
