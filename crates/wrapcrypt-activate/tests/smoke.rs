mod common;
use common::*;

#[test]
fn server_child() {
    server_child_main();
}

#[test]
fn open_read_write_close() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), 32 << 20);
    let name = unique("smoke");
    let p = payload(&name, &img, "xor", 4096);
    let _g = Guard::new(&name);
    let info = open(&p).expect("open");
    eprintln!("{info:#?}");
    let dev = info.mapper_path.to_str().unwrap().to_owned();
    must(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={dev}"),
            "bs=1M",
            "count=4",
            "oflag=direct",
        ],
    );
    must(
        "dd",
        &[
            &format!("if={dev}"),
            "of=/dev/null",
            "bs=1M",
            "count=4",
            "iflag=direct",
        ],
    );
    wrapcrypt_activate::close(&name).expect("close");
}
