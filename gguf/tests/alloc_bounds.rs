//! Hostile headers must not make the reader allocate what they claim: a counting global
//! allocator records the largest single allocation made while each file is parsed (and its
//! tensors de-quantized), which must stay within a small multiple of the file's size.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use jetc_gguf::write::encode_str;
use jetc_gguf::{GgufFile, MetaType};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&n_tensors.to_le_bytes());
    b.extend_from_slice(&n_kv.to_le_bytes());
    b
}

fn hostile_files() -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();
    let mut padded = |name, mut b: Vec<u8>| {
        b.extend_from_slice(&[0x41; 256]);
        files.push((name, b));
    };
    padded("2^60 tensors", header(1 << 60, 0));
    padded("2^60 metadata entries", header(0, 1 << 60));
    padded("u64::MAX of both", header(u64::MAX, u64::MAX));
    // A count that passes the per-entry minimum only if the check is wrong: 20 tensors in 256 bytes.
    padded("20 tensor infos in 256 bytes", header(20, 0));

    let mut b = header(0, 1);
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    padded("key length 2^62", b);

    let mut b = header(0, 1);
    encode_str("k", &mut b);
    b.extend_from_slice(&MetaType::String.id().to_le_bytes());
    b.extend_from_slice(&(1u64 << 62).to_le_bytes());
    padded("string length 2^62", b);

    for ty in [
        MetaType::U8,
        MetaType::F64,
        MetaType::Bool,
        MetaType::String,
        MetaType::Array,
    ] {
        for count in [1u64 << 62, 200] {
            let mut b = header(0, 1);
            encode_str("k", &mut b);
            b.extend_from_slice(&MetaType::Array.id().to_le_bytes());
            b.extend_from_slice(&ty.id().to_le_bytes());
            b.extend_from_slice(&count.to_le_bytes());
            padded("array count", b);
        }
    }

    let mut b = header(1, 0);
    encode_str("t", &mut b);
    b.extend_from_slice(&2u32.to_le_bytes());
    b.extend_from_slice(&(1u64 << 40).to_le_bytes());
    b.extend_from_slice(&(1u64 << 20).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    padded("dims 2^40 x 2^20", b);
    files
}

#[test]
fn hostile_headers_allocate_little() {
    for (what, bytes) in hostile_files() {
        LARGEST.store(0, Ordering::SeqCst);
        let result = GgufFile::from_bytes("hostile.gguf", &bytes);
        if let Ok(f) = &result {
            for t in &f.tensors {
                let _ = f.dequantize(t);
            }
        }
        let largest = LARGEST.load(Ordering::SeqCst);
        // Some (the 200-element U8 array) are valid; the others must be rejected.
        assert!(result.is_err() || what == "array count", "{what}: parsed");
        assert!(
            largest <= 16 * bytes.len() + 4096,
            "{what}: allocated {largest} bytes for a {}-byte file",
            bytes.len()
        );
    }
}
