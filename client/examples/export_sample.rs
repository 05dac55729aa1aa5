//! Writes the three views of the built-in sample session to a folder:
//! `cargo run -p aevis-client --example export_sample -- OUT_DIR`.

use aevis_client::{export, sample};

fn main() -> anyhow::Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "aevis-sample".into());
    let session = sample::session();
    let contribution = sample::contribution(6, 2, 4);
    let classes = sample::classes();
    let input = export::ExportInput {
        session: &session,
        graph: &sample::graph(),
        classes: &classes,
        collapse: Default::default(),
        layer: Some(&sample::layer_detail(4)),
        fill: aevis_client::view::layer::Fill::Contribution { role: aevis_shared::protocol::Role::Adversarial },
        neuron: Some(&sample::neuron_detail(6, 2)),
        region: Some(aevis_shared::protocol::Region { y0: 2, y1: 5, x0: 1, x1: 4 }),
        contribution: Some(&contribution),
    };
    for f in export::export(&input, out.as_ref(), 1.5)? {
        println!("{}", f.display());
    }
    Ok(())
}
