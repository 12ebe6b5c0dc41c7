//! Recovery of a damaged log directory (ringmq-storage, on its in-memory file system).
//!
//! Input: byte 0 = number of records (% 40), byte 1 = segment size (128 + 16 * b), then the
//! record bodies are cut from the input; they are written with the real writer and flusher.
//! The rest of the input is a list of 4-byte edits on the files: flip a bit, truncate, zero a
//! range, overwrite bytes, delete a file, add a file named like a segment (with bytes from the
//! input, possibly a valid header), add a file with another name.
//!
//! Invariants: recovery does not panic; the records it visits come in increasing LSN order,
//! with 16-byte aligned bodies, and each re-verifies against the bytes of its file (header, CRC);
//! without added files, each is exactly a record that was written at that LSN. After recovery,
//! appending and flushing more records works and a second recovery returns the first
//! recovery's records followed by the new ones.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_lite::future::block_on;
use libfuzzer_sys::fuzz_target;
use ringmq_storage::format::{
    decode_record, decode_segment_header, encode_segment_header, parse_segment_file_name, segment_file_name,
};
use ringmq_storage::{recover_on, Class, Flusher, FsyncPolicy, Log, LogConfig, Lsn, MemFs};

type Rec = (Lsn, u8, Vec<u8>);

fn flush(log: &mut Log, fl: &mut Flusher<MemFs>) {
    while let Some(batch) = log.take_batch(Instant::now()) {
        let result = block_on(fl.run_batch(batch));
        assert!(result.is_ok(), "MemFs without faults fails: {:?}", result.error());
        log.complete(result);
    }
}

fn recover_checked(fs: &MemFs, cfg: &LogConfig) -> (Log, Vec<Rec>) {
    let mut recs: Vec<Rec> = Vec::new();
    let (log, report) = recover_on(fs, cfg, |lsn, kind, body| {
        assert_eq!(body.as_ptr() as usize % 16, 0, "unaligned body");
        if let Some(last) = recs.last() {
            assert!(lsn > last.0, "LSNs out of order");
        }
        recs.push((lsn, kind, body.to_vec()));
    })
    .expect("MemFs recovery has no I/O errors");
    assert_eq!(report.records as usize, recs.len());
    (log, recs)
}

/// Each visited record is framed and valid in the segment (valid header) whose range holds its
/// LSN.
fn reverify(fs: &MemFs, dir: &Path, recs: &[Rec]) {
    let mut files: BTreeMap<Lsn, Vec<u8>> = BTreeMap::new();
    for p in fs.paths() {
        if p.parent() != Some(dir) {
            continue;
        }
        if let Some(base) = p
            .file_name()
            .and_then(|n| parse_segment_file_name(&n.to_string_lossy()))
        {
            let data = fs.read(&p).unwrap();
            if decode_segment_header(&data) == Some(base) {
                files.insert(base, data);
            }
        }
    }
    for (lsn, kind, body) in recs {
        let (base, data) = files.range(..=lsn).next_back().expect("a file holds the record");
        let off = (lsn - base) as usize;
        let rec = decode_record(&data[off..], *lsn).expect("visited record re-verifies");
        assert_eq!((rec.kind, rec.body), (*kind, &body[..]));
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = data[0] % 40;
    let cfg = LogConfig {
        segment_size_bytes: 128 + 16 * u64::from(data[1]),
        fsync: FsyncPolicy::Always,
        ..LogConfig::new("/d/core-0")
    };
    let dir = cfg.dir.clone();
    let mut rest = &data[2..];
    let fs = MemFs::new();
    let (mut log, _) = recover_on(&fs, &cfg, |_, _, _| panic!("empty")).unwrap();
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let mut written: BTreeMap<Lsn, (u8, Vec<u8>)> = BTreeMap::new();
    for i in 0..n {
        let len = rest.first().map_or(0, |&b| (b % 64) as usize);
        let body: Vec<u8> = rest.iter().skip(1).take(len).copied().collect();
        rest = rest.get(1 + len..).unwrap_or(&[]);
        let lsn = log.append(i, &body, Class::Data).expect("append");
        written.insert(lsn, (i, body));
        if i % 4 == 3 {
            flush(&mut log, &mut fl);
        }
    }
    flush(&mut log, &mut fl);
    drop((log, fl));

    let mut crafted = false;
    for edit in rest.chunks(4) {
        let [op, a, b, c] = [0, 1, 2, 3].map(|i| edit.get(i).copied().unwrap_or(0));
        let paths: Vec<PathBuf> = fs.paths();
        let path = if paths.is_empty() {
            None
        } else {
            Some(paths[a as usize % paths.len()].clone())
        };
        let offset = u64::from(u16::from_le_bytes([b, c]));
        match (op % 8, path) {
            (0, Some(p)) => {
                fs.flip_bit(&p, offset, c);
            }
            (1, Some(p)) => {
                fs.truncate_file(&p, offset);
            }
            (2, Some(p)) => {
                let mut d = fs.read(&p).unwrap();
                let start = (offset as usize).min(d.len());
                let end = (start + a as usize).min(d.len());
                d[start..end].fill(0);
                fs.put(&p, &d);
            }
            (3, Some(p)) => {
                let mut d = fs.read(&p).unwrap();
                if let Some(x) = d.get_mut(offset as usize) {
                    *x = a;
                }
                fs.put(&p, &d);
            }
            (4, Some(p)) => {
                fs.delete(&p);
            }
            (5, _) => {
                // A file named like a segment: a valid header for its name, then input bytes.
                crafted = true;
                let base = u64::from(a) * 4096 + offset * 16;
                let mut d = encode_segment_header(base).to_vec();
                d.truncate(usize::from(b) % 48);
                d.extend_from_slice(&rest[..rest.len().min(c as usize)]);
                fs.put(&dir.join(segment_file_name(base)), &d);
            }
            (6, _) => {
                let name = format!("{a:02x}{b:02x}{c:02x}.seg");
                fs.put(&dir.join(name), &edit[..]);
            }
            _ => {}
        }
    }

    let (mut log, recs) = recover_checked(&fs, &cfg);
    reverify(&fs, &dir, &recs);
    if !crafted {
        for (lsn, kind, body) in &recs {
            let w = written.get(lsn).expect("a record that was written");
            assert_eq!((&w.0, &w.1), (kind, body), "record at {lsn} differs");
        }
    }

    // Life goes on: more records after whatever recovery kept, and a second recovery.
    let mut fl = Flusher::new(fs.clone(), &cfg);
    let mut expect = recs.clone();
    for i in 0..5u8 {
        let body = vec![i; usize::from(i) * 7];
        let lsn = log.append(100 + i, &body, Class::Data).expect("append after recovery");
        expect.push((lsn, 100 + i, body));
    }
    flush(&mut log, &mut fl);
    drop((log, fl));
    let (_, again) = recover_checked(&fs, &cfg);
    assert_eq!(again, expect, "second recovery");
});
