//! `npz`: the `.npz` reader the CLI and compiled executables use for `--inputs`. Any bytes
//! must read or fail with an error; what reads must write and read back equal.

use kiln_rt::npz;
use std::io::Cursor;
use std::path::Path;

/// Runs one input: the bytes as an `.npz` file.
pub fn run(data: &[u8]) {
    let Ok(tensors) = npz::read_npz_from(Cursor::new(data), Path::new("fuzz.npz")) else {
        return;
    };
    let mut out = Cursor::new(Vec::new());
    if npz::write_npz_to(&mut out, &tensors, Path::new("fuzz.npz")).is_err() {
        // Archives can hold what a writer refuses (two entries of one name).
        return;
    }
    out.set_position(0);
    let back = npz::read_npz_from(out, Path::new("fuzz.npz"))
        .unwrap_or_else(|e| panic!("an .npz kiln wrote does not read back: {e}"));
    assert_eq!(
        back.len(),
        tensors.len(),
        "arrays lost in an .npz round trip"
    );
    for ((n1, t1), (n2, t2)) in tensors.iter().zip(&back) {
        assert_eq!(n1, n2, "array names changed in an .npz round trip");
        assert_eq!(
            t1.dtype(),
            t2.dtype(),
            "`{n1}`: dtype changed in a round trip"
        );
        assert_eq!(
            t1.shape(),
            t2.shape(),
            "`{n1}`: shape changed in a round trip"
        );
        assert_eq!(
            t1.to_le_bytes(),
            t2.to_le_bytes(),
            "`{n1}`: values changed in a round trip"
        );
    }
}
