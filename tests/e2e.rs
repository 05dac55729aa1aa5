//! The main job end to end, as a user runs it: the `aevis daemon` binary on
//! 127.0.0.1:0 with a fresh sled folder, and the headless client
//! (`aevis export`) creating a session from a real NIPS 2017 DEV photo on
//! EfficientNet-Lite0, waiting for the job, fetching layer and neuron detail
//! and a contribution, and writing the three views. A second run is answered
//! from the cache.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_aevis");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_daemon(cache: &Path, model: &str) -> (Daemon, String) {
    let mut child = Command::new(BIN)
        .args(["daemon", "--port", "0", "--models", model])
        .arg("--cache-dir")
        .arg(cache)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the aevis binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("the daemon prints its address").expect("utf-8");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.trim().to_string();
        }
    };
    (Daemon(child), url)
}

fn export(url: &str, out: &Path) -> std::process::Output {
    // DEV photo 0 (class 94, hummingbird), targeted at the class of DEV photo 10,
    // so that the 180 photos hold normal target images of the adversarial's class.
    let labels = std::fs::read_to_string(aevis_models::data::default_data_dir().join("imagenet/nips2017_dev_subset/labels.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(labels.as_bytes());
    let col = rdr.headers().unwrap().iter().position(|h| h == "true_label").unwrap();
    let target: String = rdr.records().nth(10).unwrap().unwrap().get(col).unwrap().to_string();
    Command::new(BIN)
        .args(["export", "--url", url, "--model", "imagenet-efficientnet-lite0", "--source", "0", "--targets", "2"])
        .args(["--target-class", &target, "--steps", "0", "--back", "2", "--scale", "1"])
        .arg("--out")
        .arg(out)
        .output()
        .expect("aevis export runs")
}

fn png_size(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{} is not a valid PNG: {e}", path.display()));
    (img.width(), img.height())
}

#[test]
fn the_main_job_end_to_end_on_a_dev_photo() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (_daemon, url) = start_daemon(&cache, "imagenet-efficientnet-lite0");
    let out = dir.path().join("views");
    let run = export(&url, &out);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "export failed: {stderr}");
    for view in ["river", "layer", "neuron"] {
        let svg = std::fs::read_to_string(out.join(format!("{view}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{view}.svg is not an SVG document");
        assert!(usvg::Tree::from_str(&svg, &usvg::Options::default()).is_ok(), "{view}.svg does not parse");
        let (w, h) = png_size(&out.join(format!("{view}.png")));
        assert!(w >= 600 && h >= 300, "{view}.png is only {w}×{h}");
    }
    let session: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("session.json")).unwrap()).unwrap();
    assert_eq!(session["request"]["model"], "imagenet-efficientnet-lite0");
    assert_eq!(session["targets"].as_array().unwrap().len(), 2);
    assert!(!stderr.contains("answered from the cache"), "a fresh cache cannot answer");
    // Second run: the same request is answered from the cache, no job.
    let again = export(&url, &dir.path().join("views2"));
    assert!(again.status.success(), "second export failed: {}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("answered from the cache"), "the second run recomputed the session");
}
