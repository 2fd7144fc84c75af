//! Writes every target's seed inputs to `DIR/<target>/<name>` (the corpus cargo fuzz starts
//! from): `herd-fuzz-seeds DIR`.

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: herd-fuzz-seeds DIR");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    for target in herd_fuzz::TARGETS {
        let out = dir.join(target.name);
        if let Err(e) = std::fs::create_dir_all(&out) {
            eprintln!("cannot create {}: {e}", out.display());
            std::process::exit(1);
        }
        let seeds = herd_fuzz::seeds::seeds(target.name);
        for (name, bytes) in &seeds {
            let path = out.join(name);
            if let Err(e) = std::fs::write(&path, bytes) {
                eprintln!("cannot write {}: {e}", path.display());
                std::process::exit(1);
            }
        }
        println!("{}: {} seeds in {}", target.name, seeds.len(), out.display());
    }
}
