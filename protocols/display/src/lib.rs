//! A model of the Guacamole display, without I/O, that produces key frames.
//!
//! A graphical recording is the stream of Guacamole instructions the server sent to the user's
//! client. To seek in it, the recorder stores, at least every few seconds of activity, a
//! **key frame**: the instructions that redraw the screen of that moment on a client that has
//! seen nothing. `ztproxy recording export --from T` writes the last key frame before `T`,
//! then the recorded instructions from there.
//!
//! [`Display`] is the model behind key frames. It consumes, in order, every instruction the
//! server sends to the client ([`Display::handle`]) and keeps what guacamole-common-js's
//! `Guacamole.Client` keeps: the default layer, visible layers and their tree (parent,
//! position, Z order, opacity, distortion), off-screen buffers, all their pixels, the cursor
//! and the last `sync` timestamp. [`Display::snapshot`] captures it cheaply (pixels are
//! shared copy-on-write) and [`Snapshot::encode`] turns the capture into instructions
//! (`size`, `move`, `img` + `blob` + `end` of PNG tiles, `cursor`, `sync`, …), expensively,
//! so the proxy runs it on a blocking thread.
//!
//! The crate reads no clock, spawns nothing and does no I/O. It never panics on input and
//! never holds more than its [`DisplayLimits`] allow (256 MiB of pixels by default).
//!
//! # Example: the proxy's recording path
//!
//! ```
//! use zt_display::{Display, DisplayLimits};
//! use zt_guac::{Decoder, Limits};
//!
//! let mut display = Display::new(DisplayLimits::default());
//! let mut from_guacd = Decoder::new(Limits::default());
//! let (mut last_key_frame_ms, mut key_frames) = (None, Vec::new());
//! // A 4 × 2 screen filled red, then the end of a frame.
//! from_guacd.feed(b"4.size,1.0,1.4,1.2;4.rect,1.0,1.0,1.0,1.4,1.2;");
//! from_guacd.feed(b"5.cfill,2.14,1.0,3.255,1.0,1.0,3.255;4.sync,4.5000;");
//! while let Some(instruction) = from_guacd.poll_instruction()? {
//!     // ... forward `instruction` to the client and append it to the recording ...
//!     let _ = display.handle(&instruction); // an error concerns this instruction only
//!     let Some(now_ms) = display.last_timestamp() else { continue };
//!     let due = last_key_frame_ms.is_none_or(|last| now_ms >= last + 5_000);
//!     if due && display.key_frame_ready() && !display.is_degraded() {
//!         let snapshot = display.snapshot(); // cheap, on the session task
//!         // In the proxy: tokio::task::spawn_blocking(move || snapshot.encode()).
//!         key_frames.push((now_ms, snapshot.encode()));
//!         last_key_frame_ms = Some(now_ms);
//!     }
//! }
//! assert_eq!(key_frames.len(), 1);
//!
//! // Replaying the key frame into a fresh display reproduces the screen.
//! let mut replay = Display::new(DisplayLimits::default().for_key_frame_replay());
//! let mut decoder = Decoder::new(Limits::default());
//! decoder.feed(&key_frames[0].1);
//! while let Some(instruction) = decoder.poll_instruction()? {
//!     replay.handle(&instruction)?;
//! }
//! assert_eq!(replay.last_timestamp(), Some(5000));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What is modelled, and how exactly
//!
//! The reference is what guacamole-common-js (the browser client and the session player)
//! does with each instruction; guacenc (guacamole-server's recording encoder) agrees except
//! where noted. "Exact" means the model computes the pixels the protocol defines, with
//! straight (non-premultiplied) 8-bit RGBA and rounding to nearest: a browser canvas stores
//! premultiplied alpha, so for semi-transparent pixels drawn over semi-transparent ones it may
//! differ by rounding. guacd's own output (opaque images drawn with OVER, ROUT clears) is
//! exact.
//!
//! | instructions | status |
//! | --- | --- |
//! | `size` | exact: a layer keeps the overlap and resets its drawing state; a visible layer first referenced is created at the display's size, a buffer at 0 × 0 and grows to fit what is drawn into it (`autosize`) |
//! | `img` + `blob` + `end` (PNG, JPEG, WebP), legacy `png`/`jpeg` | PNG and lossless WebP exact; JPEG and lossy WebP within the decoders' rounding (counted in [`Display::approximations`]); the image is drawn at `end` (see below) |
//! | `copy`, `transfer` (all 16 functions), `cursor` | exact, including guacamole-common-js's clipping of the source |
//! | `rect`, `start`, `line`, `close` + `cfill` | exact for pixel-aligned rectangles (all guacd draws); other shapes filled at pixel centres without anti-aliasing |
//! | `arc`, `curve`, `cstroke`, `lfill` | approximate: flattened, no anti-aliasing; strokes as polygons (miter joins as bevels); patterns repeat the layer, not its canvas rounded up to 64 pixels |
//! | `clip`, `push`, `pop`, `reset`, `identity`, `transform` | a clip is the bounding box of the path (exact for one rectangle); transforms apply to paths; an image or copy drawn under a transform other than a whole-pixel translation degrades the layer |
//! | `move`, `shade`, `distort`, `dispose` | exact, including the stacking of siblings with equal Z and layers detached by disposing their parent |
//! | `mouse`, `sync` | remembered and re-emitted |
//! | `lstroke`, `nest` | degrade the display (guacamole-common-js fails on `lstroke`; `nest` is obsolete) |
//! | `video` | ignored: guacamole-common-js has no default video player and draws nothing |
//! | everything else (`nop`, `audio`, `clipboard`, `file`, `pipe`, `argv`, `ack`, `error`, `disconnect`, `set`, …) | ignored (`set` only changes the miter limit of strokes) |
//!
//! Channel masks follow guacamole-common-js's mapping to canvas composite operations. SRC
//! (0xC) and OVER (0xE) are exact, as are ROUT, ATOP, XOR, ROVER and PLUS. IN, OUT, RIN, RATOP
//! and SRC are *unbounded* in the HTML canvas: they also clear the layer outside the shape or
//! image drawn (within the clip), which the model does; guacenc (cairo) and old WebKit leave
//! those pixels alone, so recordings using them render differently there. Masks 0x0, 0x3,
//! 0x5, 0x7 and 0xD have no canvas operation: the previous one stays in effect.
//!
//! # When the model degrades
//!
//! [`Display::is_degraded`] becomes true when a key frame could be wrong: an image that does
//! not decode or exceeds a limit (its layer), a layer or buffer the model could not create or
//! resize, a malformed drawing instruction, a layer drawn while one of its images was still
//! streaming where clients that draw an image at its `img` (Chromium's `ImageDecoder`) and at
//! its `end` (Firefox, guacenc) disagree, and the unsupported cases above. Several image
//! streams open at once on one layer, their `blob`s interleaved, are fine as long as the two
//! kinds of client draw them in the same order: an image ended while another opened before
//! it is still open must not overlap it. guacd 1.6 streams exactly that way (disjoint, or
//! nested: opened first, ended first). [`Display::degradation`] says why the model degraded. Degradation of a
//! layer ends when the layer is disposed, resized to nothing or entirely overwritten; the
//! rest is permanent. The proxy then records without key frames: seeking falls back to
//! replaying from the start.
//!
//! [`Display::key_frame_ready`] is false while an image stream is open or a layer has a
//! drawing state a key frame cannot rebuild (a `push`ed state, a clip, a transform); guacd
//! leaves neither across a `sync`.
//!
//! An [`Err`] from [`Display::handle`] concerns one instruction and is not by itself a reason
//! to stop: keep feeding the display and look at [`Display::is_degraded`] before each key
//! frame. A snapshot taken anyway says so ([`Snapshot::is_complete`] is false).
//!
//! # What a key frame contains
//!
//! [`Snapshot::encode`] writes plain Guacamole instructions that any client (or the session
//! player, or a fresh [`Display`]) can consume after a stream start, in this order: `size` of
//! every layer and buffer; `move`, `shade` and `distort` to rebuild the layer tree; the pixels
//! of every layer and buffer as PNG tiles of [`TILE_SIZE`] pixels (`img` + `blob`s of at most
//! [`BLOB_CHARS`] characters + `end`, transparent tiles skipped); each layer's current path
//! and compositing operation; the cursor; the last `mouse`; and `sync` with the last
//! timestamp. The exact order and the few spare indexes it uses are documented on
//! [`Snapshot::encode`].
//!
//! The guarantee, checked by the tests and the `display_feed` fuzz target: when the snapshot
//! [is complete](Snapshot::is_complete), feeding the key frame to a fresh display with
//! [`DisplayLimits::for_key_frame_replay`] applies every instruction without error and gives
//! a display that no later instruction can tell apart from the original: same pixels in
//! every layer, buffer and the cursor, same layer tree and stacking, same compositing
//! operations and current paths, same mouse and timestamp. Things a key frame does not
//! carry: audio, clipboard, files and other streams, and everything the model ignores (see
//! the table above).
//!
//! # Limits
//!
//! Every size and count the stream controls is bounded by [`DisplayLimits`], checked before
//! anything is allocated: layer dimensions, the total of pixels held, the number of layers,
//! buffers and open image streams, the base64 held per image stream and in total, the decoded
//! size of an image (read from its header), the points of a path and the depth of the `push`
//! stack. Fills and strokes whose rasterisation would take too long are refused too. An
//! instruction that would cross a limit is refused with [`DisplayError::LimitExceeded`] and
//! degrades what it concerned; nothing is truncated silently. See [`DisplayLimits`] for the
//! memory these bounds add up to.
//!
//! # Known differences from a browser
//!
//! * guacamole-common-js backs each layer with a canvas rounded up to 64 pixels. Pixels drawn
//!   beyond a layer's size inside that margin, or left there by shrinking a layer within the
//!   same 64-pixel block, reappear if the layer grows again; the model keeps only the layer's
//!   own pixels. guacd never draws outside a layer.
//! * A visible layer created in the same frame as a resize of the default layer takes the
//!   default layer's new size here, its previous size in guacamole-common-js (which applies
//!   resizes when the frame is rendered); guacd sizes every layer it uses explicitly.
//! * `reset` and the growth of a buffer restore, in guacamole-common-js, the composite
//!   operation saved when the canvas was last reallocated; the model keeps the current one.
//!   This is visible only to an image streamed across such an event, which degrades anyway.
//! * Colour profiles (PNG `gAMA`/`iCCP`, JPEG ICC) are ignored, as guacd's images have none.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)] // pixels are read with .get(); a panic here is a remote DoS

mod args;
#[cfg(any(test, fuzzing))]
mod canonical;
mod decode;
mod deferred;
mod display;
mod error;
mod keyframe;
mod limits;
mod path;
mod screen;
mod surface;

pub use deferred::{
    CELL, DEFAULT_BUDGET, DeferredDisplay, DeferredStats, GRID, MAX_GRIDS, MAX_TRACKED,
};
pub use display::Display;
pub use error::{DisplayError, Limit, Unsupported};
pub use keyframe::{BLOB_CHARS, Image, Snapshot, TILE_SIZE, encode_image};
pub use limits::{
    DEFAULT_MAX_BUFFERS, DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_IMAGE_STREAM_BYTES,
    DEFAULT_MAX_IMAGE_STREAMS, DEFAULT_MAX_LAYER_SIDE, DEFAULT_MAX_LAYERS, DEFAULT_MAX_PATH_POINTS,
    DEFAULT_MAX_STATE_STACK, DEFAULT_MAX_TOTAL_IMAGE_STREAM_BYTES, DEFAULT_MAX_TOTAL_PIXELS,
    DisplayLimits,
};
pub use screen::Screen;

/// Entry points for the fuzz targets in `protocols/fuzz`; not part of the API.
#[cfg(fuzzing)]
pub mod fuzzing;
#[cfg(all(test, not(fuzzing)))]
#[expect(unreachable_pub, reason = "public in fuzzing builds, private in tests")]
mod fuzzing;

#[cfg(test)]
mod tests;
