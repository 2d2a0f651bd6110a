//! The server-sent events reader `kait tail` follows a stream with (`kait_core::sse`): any
//! bytes from a server. No panic; the events do not depend on how the bytes were split into
//! chunks; an id never holds the line break that ended it.
#![no_main]

use kait_core::sse::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let whole = Reader::default().feed(stream).expect("inputs are far below the line limit");
    let at = usize::from(split).min(stream.len());
    let mut chunked = Reader::default();
    let mut events = chunked.feed(&stream[..at]).unwrap();
    events.extend(chunked.feed(&stream[at..]).unwrap());
    assert_eq!(whole, events, "split at {at}");
    for event in &whole {
        assert!(event.id.as_deref().is_none_or(|id| !id.contains('\n')));
    }
});
