//! The committed `fixtures/audit-demo/` is exactly what `examples/gen_audit_demo.rs`
//! produces: regenerate into a temporary folder and compare every byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[allow(dead_code, unused_imports)]
#[path = "../examples/gen_audit_demo.rs"]
mod demo_gen;

fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_owned(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn the_committed_demo_matches_its_generator() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let tmp = tempfile::tempdir().unwrap();
    demo_gen::generate(&fixtures.join("base"), tmp.path());
    let (fresh, committed) = (tree(tmp.path()), tree(&fixtures.join("audit-demo")));
    let names = |t: &BTreeMap<PathBuf, Vec<u8>>| t.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&fresh),
        names(&committed),
        "file lists differ: regenerate with `cargo run --example gen_audit_demo`"
    );
    for (path, bytes) in &fresh {
        assert!(
            &committed[path] == bytes,
            "{} differs: regenerate with `cargo run --example gen_audit_demo`",
            path.display()
        );
    }
}
