//! Loader for the byte transcripts in tests/vectors (format: tests/vectors/README.md).
//!
//! Shared by every test that replays vectors; include it with
//! `#[path = "common/vectors.rs"] mod vectors;`. Panics with the file and line on anything it
//! cannot parse: a broken vector file is a broken test, not a case to skip.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

/// Who sent a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// `S>C`: from the CAPF server to the phone.
    ServerToClient,
    /// `C>S`: from the phone to the CAPF server.
    ClientToServer,
}

/// One frame line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VectorFrame {
    pub dir: Direction,
    /// The whole frame, header and body, as on the wire.
    pub bytes: Vec<u8>,
    /// The `@expect` verdict given just before this frame (malformed-frames.txt only).
    pub expect: Option<String>,
    /// 1-based line number in the file, for failure messages.
    pub line: usize,
    /// The `#` comment lines since the previous frame, without the `#` and leading blanks: the
    /// independent decoder's annotations in the captured flows, the case description in
    /// malformed-frames.txt.
    pub comments: Vec<String>,
}

/// One vector file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VectorFile {
    /// File name without `.txt`, e.g. `01-install-password-rsa2048`.
    pub name: String,
    /// `@key value` lines other than `@expect`, in file order.
    pub meta: Vec<(String, String)>,
    pub frames: Vec<VectorFrame>,
}

impl VectorFile {
    /// Value of the first `@key` line with that key.
    pub(crate) fn meta(&self, key: &str) -> Option<&str> {
        self.meta
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is one of the captured flows (`NN-...`), as opposed to hand-made cases.
    pub(crate) fn is_flow(&self) -> bool {
        self.name
            .split('-')
            .next()
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    }
}

/// The folder holding the vector files: `tests/vectors` at the workspace's top, found from
/// whichever crate's tests include this file.
pub(crate) fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("tests").join("vectors"))
        .find(|dir| dir.is_dir())
        .expect("tests/vectors above this crate")
}

/// Loads `tests/vectors/<name>.txt`; `name` may be given with or without `.txt`.
pub(crate) fn load(name: &str) -> VectorFile {
    let stem = name.strip_suffix(".txt").unwrap_or(name);
    let path = dir().join(format!("{stem}.txt"));
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse(stem, &text)
}

/// Every `*.txt` file in tests/vectors, sorted by name (malformed-frames included).
pub(crate) fn load_all() -> Vec<VectorFile> {
    let folder = dir();
    let mut names: Vec<String> = fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", folder.display()))
        .map(|entry| entry.expect("directory entry").file_name())
        .filter_map(|name| {
            name.to_str()
                .and_then(|n| n.strip_suffix(".txt"))
                .map(String::from)
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no vector files in {}", folder.display());
    names.iter().map(|name| load(name)).collect()
}

/// Parses the text of one vector file.
pub(crate) fn parse(name: &str, text: &str) -> VectorFile {
    let mut file = VectorFile {
        name: name.to_string(),
        meta: Vec::new(),
        frames: Vec::new(),
    };
    let mut expect = None;
    let mut comments = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let where_ = || format!("{name}.txt:{line}");
        let content = raw.trim_end();
        if content.is_empty() {
            continue;
        }
        if let Some(comment) = content.strip_prefix('#') {
            comments.push(comment.trim_start().to_string());
        } else if let Some(rest) = content.strip_prefix('@') {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!key.is_empty(), "{}: empty metadata key", where_());
            if key == "expect" {
                assert!(expect.is_none(), "{}: two @expect in a row", where_());
                expect = Some(value.trim().to_string());
            } else {
                file.meta.push((key.to_string(), value.trim().to_string()));
            }
        } else {
            let (dir, hex_text) = if let Some(hex_text) = content.strip_prefix("S>C ") {
                (Direction::ServerToClient, hex_text)
            } else if let Some(hex_text) = content.strip_prefix("C>S ") {
                (Direction::ClientToServer, hex_text)
            } else {
                panic!("{}: unrecognised line {content:?}", where_());
            };
            let bytes = hex::decode(hex_text.trim())
                .unwrap_or_else(|e| panic!("{}: bad hex: {e}", where_()));
            file.frames.push(VectorFrame {
                dir,
                bytes,
                expect: expect.take(),
                line,
                comments: std::mem::take(&mut comments),
            });
        }
    }
    assert!(
        expect.is_none(),
        "{name}.txt: @expect without a frame after it"
    );
    file
}
