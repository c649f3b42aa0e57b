mod pack;
fn main() {
    let dirs: Vec<std::path::PathBuf> = std::env::args().skip(1).map(Into::into).collect();
    for l in pack::load_dirs(&dirs, &Default::default()) {
        for d in &l.diagnostics { println!("{d}"); }
    }
}
