//! [`Segment`]: created zero-filled at the asked size, mapped again from its handle with the
//! same bytes, a mapping outliving its handle, a wrong announced size refused; and
//! [`release_free_heap`]. (Carrying a segment to another process: `control.rs`.)

use super::{fill, mismatch};
use crate::error::IpcError;
use crate::platform::{borrow_handle, release_free_heap, Segment};

/// A new segment has exactly the asked length and reads as zeros throughout, whatever the
/// length (one byte, a page, not a whole number of pages, a megabyte), and every byte of it is
/// writable.
#[test]
fn created_segments_have_the_asked_size_and_are_zero_filled() {
    for len in [1, 4096, 65536 + 1, 1 << 20] {
        let (seg, _handle) = Segment::create("conformance", len).unwrap();
        assert_eq!(seg.len(), len);
        // SAFETY: the mapping is live and `len` bytes long; nothing else writes it.
        let bytes = unsafe { std::slice::from_raw_parts(seg.as_ptr(), len) };
        assert!(bytes.iter().all(|&b| b == 0), "a new {len}-byte segment is not zero-filled");
        fill(&seg, 0, len, 7);
        assert_eq!(mismatch(&seg, 0, len, 7), None);
    }
}

#[test]
fn a_zero_length_segment_is_refused() {
    assert!(matches!(Segment::create("conformance", 0), Err(IpcError::InvalidArgument(_))));
}

/// Two mappings of one segment see each other's writes, and both stay valid after the handle
/// they came from is closed (the peer closes its handle once mapped).
#[test]
fn mappings_share_bytes_and_outlive_the_handle() {
    let len = 3 * 4096;
    let (first, handle) = Segment::create("conformance", len).unwrap();
    let second = Segment::open(borrow_handle(&handle), len).unwrap();
    drop(handle);
    assert_eq!(second.len(), len);
    fill(&first, 0, len / 2, 11);
    assert_eq!(mismatch(&second, 0, len / 2, 11), None, "the second mapping does not see the first's writes");
    fill(&second, len / 2, len - len / 2, 23);
    assert_eq!(
        mismatch(&first, len / 2, len - len / 2, 23),
        None,
        "the first mapping does not see the second's"
    );
    drop(first);
    assert_eq!(mismatch(&second, len / 2, len - len / 2, 23), None);
}

/// A segment smaller than the handshake announces is refused, not mapped past its end. (A
/// larger one: the Unix backends refuse any other size; the Windows backend maps the announced
/// length of a larger section, which its docs allow.)
#[test]
fn a_segment_smaller_than_announced_is_refused() {
    let len = 64 * 1024;
    let (_seg, handle) = Segment::create("conformance", len).unwrap();
    let opened = Segment::open(borrow_handle(&handle), 2 * len);
    assert!(matches!(opened, Err(IpcError::Handshake(_))), "{:?}", opened.err());
}

/// Giving free heap pages back leaves the heap usable, from several threads at once.
#[test]
fn release_free_heap_keeps_the_heap_usable() {
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            std::thread::spawn(move || {
                for round in 0..8u8 {
                    let blocks: Vec<Vec<u8>> = (0..256).map(|i| vec![t ^ round ^ i as u8; 4096]).collect();
                    release_free_heap();
                    for (i, b) in blocks.iter().enumerate() {
                        assert!(b.iter().all(|&x| x == t ^ round ^ i as u8));
                    }
                    drop(blocks);
                    release_free_heap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
