//! Typed instructions: the opcodes ztproxy inspects, with validated arguments.
//!
//! [`TypedInstruction::parse`] turns a decoded [`Instruction`] into a [`TypedInstruction`]
//! borrowing its text; [`TypedInstruction::encode`] writes one. Everything else is
//! [`TypedInstruction::Other`], which encodes as the original bytes.
//!
//! Parsing follows the protocol reference
//! (<https://guacamole.apache.org/doc/gug/protocol-reference.html>) and, where the reference
//! and guacd differ, what guacd sends (`img` is `stream,mask,layer,mimetype,x,y`; `rect` has
//! no mask; `mouse` and `key` from guacd carry a timestamp). It is strict about the arguments
//! it reads: integers are `-?[0-9]+` within the field's range, numbers are finite. Arguments
//! after the ones an opcode defines are ignored, as guacd and guacamole-common-js ignore them,
//! so newer peers that append arguments still parse; the raw form keeps them.

use bytes::BytesMut;

use crate::codec::InstructionWriter;
use crate::error::{ArgumentError, ParseError};
use crate::instruction::Instruction;
use crate::status::Status;

/// Who sent an instruction, and in which phase: a few opcodes mean different things
/// depending on it (`size`, `audio`, `video`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Context {
    /// From the client, before `ready` (`select`, `size`, `audio`, `video`, `image`,
    /// `timezone`, `name`, `connect`).
    ClientHandshake,
    /// From the client, after `ready` (input, streams, `sync`, …).
    ClientInteractive,
    /// From the server (guacd), before `ready` (`args`, `ready`, `error`).
    ServerHandshake,
    /// From the server (guacd), after `ready` (drawing, streams, `sync`, …).
    ServerInteractive,
}

/// Index of a stream (`img`, `blob`, `end`, `ack`, `clipboard`, `file`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamIndex(pub u32);

/// Index of a layer: 0 is the default (visible) layer, positive indexes are further visible
/// layers, negative ones are off-screen buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerIndex(pub i32);

impl LayerIndex {
    /// The default layer, the display itself.
    pub const DEFAULT: Self = Self(0);

    /// Whether this is an off-screen buffer (negative index).
    pub fn is_buffer(self) -> bool {
        self.0 < 0
    }
}

/// Index of an object (`filesystem`, `get`, `put`, `body`, `undefine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectIndex(pub u32);

/// Channel mask (composite mode) of a drawing operation, guacd's `guac_composite_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelMask(pub u8);

impl ChannelMask {
    /// Replace the destination (`GUAC_COMP_SRC`).
    pub const SRC: Self = Self(0xC);
    /// Draw over the destination (`GUAC_COMP_OVER`).
    pub const OVER: Self = Self(0xE);
}

/// Mouse button state: bit N set while button N is pressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ButtonMask(pub u32);

impl ButtonMask {
    /// Left button.
    pub const LEFT: Self = Self(0x01);
    /// Middle button.
    pub const MIDDLE: Self = Self(0x02);
    /// Right button.
    pub const RIGHT: Self = Self(0x04);
    /// Scroll wheel up.
    pub const SCROLL_UP: Self = Self(0x08);
    /// Scroll wheel down.
    pub const SCROLL_DOWN: Self = Self(0x10);
}

/// An X11 keysym (<https://www.x.org/releases/current/doc/xproto/x11protocol.html#keysym_encoding>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Keysym(pub u32);

/// An instruction ztproxy inspects, with its arguments parsed; [`Other`](Self::Other) for the
/// rest. Text fields borrow from the [`Instruction`] it was parsed from.
///
/// Field names follow the protocol reference; numbers are in the units it gives (pixels,
/// milliseconds).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TypedInstruction<'a> {
    // Client handshake.
    /// `select`: the protocol, or the id of a connection to join.
    Select {
        /// Protocol name (`rdp`, `vnc`, …) or connection id.
        identifier: &'a str,
    },
    /// `size` during the handshake: the client's optimal display size.
    HandshakeSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Resolution in DPI (clients since 0.9 send it).
        dpi: Option<u32>,
    },
    /// `audio` during the handshake: supported audio mimetypes, preferred first.
    HandshakeAudio {
        /// Mimetypes.
        mimetypes: Vec<&'a str>,
    },
    /// `video` during the handshake: supported video mimetypes, preferred first.
    HandshakeVideo {
        /// Mimetypes.
        mimetypes: Vec<&'a str>,
    },
    /// `image`: supported image mimetypes, preferred first.
    Image {
        /// Mimetypes.
        mimetypes: Vec<&'a str>,
    },
    /// `timezone`: the client's IANA time zone.
    Timezone {
        /// Zone name, such as `Europe/Paris`.
        timezone: &'a str,
    },
    /// `name`: the user's display name.
    Name {
        /// Name.
        name: &'a str,
    },
    /// `connect`: values for the parameters `args` listed, in the same order (the first is
    /// the protocol version when `args` had one).
    Connect {
        /// Values.
        values: Vec<&'a str>,
    },

    // Server handshake.
    /// `args`: the protocol version (`VERSION_1_5_0`, since 1.1.0) then the names of the
    /// connection parameters the server expects in `connect`.
    Args {
        /// Version then parameter names, as sent.
        values: Vec<&'a str>,
    },
    /// `ready`: the handshake succeeded; the new connection's id.
    Ready {
        /// Connection id.
        identifier: &'a str,
    },
    /// `required`: the server needs these parameters (usually credentials) to go on.
    Required {
        /// Parameter names.
        names: Vec<&'a str>,
    },

    // Control.
    /// `sync`: everything up to `timestamp` has been sent (server) or rendered (client).
    Sync {
        /// Server-relative timestamp in milliseconds.
        timestamp: u64,
        /// Frames rendered since the previous `sync` (guacd 1.6 and later).
        frames: Option<u32>,
    },
    /// `nop`: keep-alive.
    Nop,
    /// `disconnect`: the sender is closing the connection.
    Disconnect,
    /// `error`: the server is closing the connection because of an error.
    Error {
        /// Human-readable message (for debugging; untrusted text).
        message: &'a str,
        /// Status code.
        status: Status,
    },
    /// `log`: debugging text from the server.
    Log {
        /// Message (untrusted text).
        message: &'a str,
    },

    // Streams.
    /// `ack`: a `blob` (or the stream's opening) was handled; a status other than
    /// [`Status::SUCCESS`] ends the stream.
    Ack {
        /// Stream acknowledged.
        stream: StreamIndex,
        /// Human-readable message (untrusted text).
        message: &'a str,
        /// Status code.
        status: Status,
    },
    /// `argv`: opens a stream carrying a new value of connection parameter `name`.
    Argv {
        /// Stream opened.
        stream: StreamIndex,
        /// Mimetype of the value.
        mimetype: &'a str,
        /// Parameter name.
        name: &'a str,
    },
    /// `audio` after the handshake: opens an audio stream.
    Audio {
        /// Stream opened.
        stream: StreamIndex,
        /// Mimetype of the audio data.
        mimetype: &'a str,
    },
    /// `blob`: a chunk of base64 data on a stream.
    Blob {
        /// Stream the data belongs to.
        stream: StreamIndex,
        /// Base64 data.
        data: &'a str,
    },
    /// `clipboard`: opens a stream carrying clipboard contents.
    Clipboard {
        /// Stream opened.
        stream: StreamIndex,
        /// Mimetype of the contents (usually `text/plain`).
        mimetype: &'a str,
    },
    /// `end`: closes a stream normally.
    End {
        /// Stream closed.
        stream: StreamIndex,
    },
    /// `file`: opens a stream carrying a file (a download from the server, an upload from the
    /// client).
    File {
        /// Stream opened.
        stream: StreamIndex,
        /// Mimetype of the file.
        mimetype: &'a str,
        /// File name (untrusted text).
        filename: &'a str,
    },
    /// `img`: opens a stream carrying an image to draw.
    Img {
        /// Stream opened.
        stream: StreamIndex,
        /// Channel mask for drawing.
        mask: ChannelMask,
        /// Destination layer.
        layer: LayerIndex,
        /// Mimetype of the image.
        mimetype: &'a str,
        /// Destination X.
        x: i32,
        /// Destination Y.
        y: i32,
    },
    /// `pipe`: opens a named pipe stream.
    Pipe {
        /// Stream opened.
        stream: StreamIndex,
        /// Mimetype of the data.
        mimetype: &'a str,
        /// Pipe name.
        name: &'a str,
    },
    /// `video` after the handshake: opens a video stream into a layer.
    Video {
        /// Stream opened.
        stream: StreamIndex,
        /// Layer the video plays in.
        layer: LayerIndex,
        /// Mimetype of the video data.
        mimetype: &'a str,
    },

    // Objects.
    /// `body`: opens a stream answering a `get`.
    Body {
        /// Object the stream belongs to.
        object: ObjectIndex,
        /// Stream opened.
        stream: StreamIndex,
        /// Mimetype of the data.
        mimetype: &'a str,
        /// Name of the stream within the object.
        name: &'a str,
    },
    /// `filesystem`: exposes a filesystem object (SFTP, RDP drive).
    Filesystem {
        /// Object allocated.
        object: ObjectIndex,
        /// Filesystem name.
        name: &'a str,
    },
    /// `get`: requests the stream `name` of an object (a download, or a directory listing).
    Get {
        /// Object.
        object: ObjectIndex,
        /// Stream name (a path, for filesystems).
        name: &'a str,
    },
    /// `put`: opens a stream writing to `name` in an object (an upload).
    Put {
        /// Object.
        object: ObjectIndex,
        /// Stream opened.
        stream: StreamIndex,
        /// Mimetype of the data.
        mimetype: &'a str,
        /// Stream name (a path, for filesystems).
        name: &'a str,
    },
    /// `undefine`: the object is gone.
    Undefine {
        /// Object.
        object: ObjectIndex,
    },

    // Input.
    /// `key`: a key was pressed or released.
    Key {
        /// Key.
        keysym: Keysym,
        /// Pressed (any non-zero value on the wire) or released.
        pressed: bool,
        /// When guacd relays another user's key: server timestamp in milliseconds.
        timestamp: Option<u64>,
    },
    /// `mouse`: pointer position and button state.
    Mouse {
        /// X in pixels.
        x: i32,
        /// Y in pixels.
        y: i32,
        /// Buttons pressed.
        buttons: ButtonMask,
        /// When guacd relays the pointer to the client: server timestamp in milliseconds.
        timestamp: Option<u64>,
    },
    /// `touch`: a touch point changed.
    Touch {
        /// Touch point id.
        id: u32,
        /// X in pixels.
        x: i32,
        /// Y in pixels.
        y: i32,
        /// Horizontal radius of the contact ellipse in pixels.
        x_radius: i32,
        /// Vertical radius of the contact ellipse in pixels.
        y_radius: i32,
        /// Rotation of the contact ellipse in degrees.
        angle: f64,
        /// Pressure from 0 (released) to 1.
        force: f64,
        /// When guacd relays the touch: server timestamp in milliseconds.
        timestamp: Option<u64>,
    },
    /// `size` from the client after the handshake: its optimal display size changed.
    ClientSize {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },

    // Drawing.
    /// `cfill`: fills the current path with a colour.
    Cfill {
        /// Channel mask.
        mask: ChannelMask,
        /// Layer.
        layer: LayerIndex,
        /// Red.
        r: u8,
        /// Green.
        g: u8,
        /// Blue.
        b: u8,
        /// Alpha.
        a: u8,
    },
    /// `copy`: copies a rectangle between layers.
    Copy {
        /// Source layer.
        src_layer: LayerIndex,
        /// Source X.
        src_x: i32,
        /// Source Y.
        src_y: i32,
        /// Width.
        width: i32,
        /// Height.
        height: i32,
        /// Channel mask.
        mask: ChannelMask,
        /// Destination layer.
        dst_layer: LayerIndex,
        /// Destination X.
        dst_x: i32,
        /// Destination Y.
        dst_y: i32,
    },
    /// `cursor`: sets the pointer image from a rectangle of a layer.
    Cursor {
        /// Hotspot X.
        x: i32,
        /// Hotspot Y.
        y: i32,
        /// Source layer.
        src_layer: LayerIndex,
        /// Source X.
        src_x: i32,
        /// Source Y.
        src_y: i32,
        /// Width.
        width: i32,
        /// Height.
        height: i32,
    },
    /// `rect`: adds a rectangle to the current path of a layer.
    Rect {
        /// Layer.
        layer: LayerIndex,
        /// X.
        x: i32,
        /// Y.
        y: i32,
        /// Width.
        width: i32,
        /// Height.
        height: i32,
    },
    /// `size` from the server: sets a layer's size (layer 0: the display).
    LayerSize {
        /// Layer.
        layer: LayerIndex,
        /// Width in pixels.
        width: i32,
        /// Height in pixels.
        height: i32,
    },

    /// Any other opcode, untouched; encodes as its original bytes.
    Other(&'a Instruction),
}

impl<'a> TypedInstruction<'a> {
    /// Parses `instruction` as sent in `context`.
    ///
    /// Opcodes this crate does not type give [`Other`](Self::Other); a typed opcode with
    /// missing or malformed arguments gives a [`ParseError`] (the framing is fine, so the
    /// stream can go on).
    ///
    /// ```
    /// use zt_guac::{Context, Decoder, StreamIndex, TypedInstruction};
    ///
    /// let mut decoder = Decoder::default();
    /// decoder.feed(b"4.blob,1.3,8.SGVsbG8=;");
    /// let instruction = decoder.poll_instruction()?.expect("complete");
    /// let typed = TypedInstruction::parse(&instruction, Context::ServerInteractive)?;
    /// assert_eq!(typed, TypedInstruction::Blob { stream: StreamIndex(3), data: "SGVsbG8=" });
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(instruction: &'a Instruction, context: Context) -> Result<Self, ParseError> {
        use Context::{ClientHandshake, ClientInteractive};

        let mut r = Reader {
            instruction,
            next: 0,
        };
        Ok(match instruction.opcode() {
            opcode::SELECT => Self::Select {
                identifier: r.text()?,
            },
            opcode::SIZE => match context {
                ClientHandshake => Self::HandshakeSize {
                    width: r.int()?,
                    height: r.int()?,
                    dpi: r.optional_int()?,
                },
                ClientInteractive => Self::ClientSize {
                    width: r.int()?,
                    height: r.int()?,
                },
                _ => Self::LayerSize {
                    layer: r.layer()?,
                    width: r.int()?,
                    height: r.int()?,
                },
            },
            opcode::AUDIO => match context {
                ClientHandshake => Self::HandshakeAudio {
                    mimetypes: r.rest(),
                },
                _ => Self::Audio {
                    stream: r.stream()?,
                    mimetype: r.text()?,
                },
            },
            opcode::VIDEO => match context {
                ClientHandshake => Self::HandshakeVideo {
                    mimetypes: r.rest(),
                },
                _ => Self::Video {
                    stream: r.stream()?,
                    layer: r.layer()?,
                    mimetype: r.text()?,
                },
            },
            opcode::IMAGE => Self::Image {
                mimetypes: r.rest(),
            },
            opcode::TIMEZONE => Self::Timezone {
                timezone: r.text()?,
            },
            opcode::NAME => Self::Name { name: r.text()? },
            opcode::CONNECT => Self::Connect { values: r.rest() },
            opcode::ARGS => Self::Args { values: r.rest() },
            opcode::READY => Self::Ready {
                identifier: r.text()?,
            },
            opcode::REQUIRED => Self::Required { names: r.rest() },
            opcode::SYNC => Self::Sync {
                timestamp: r.int()?,
                frames: r.optional_int()?,
            },
            opcode::NOP => Self::Nop,
            opcode::DISCONNECT => Self::Disconnect,
            opcode::ERROR => Self::Error {
                message: r.text()?,
                status: r.status()?,
            },
            opcode::LOG => Self::Log { message: r.text()? },
            opcode::ACK => Self::Ack {
                stream: r.stream()?,
                message: r.text()?,
                status: r.status()?,
            },
            opcode::ARGV => Self::Argv {
                stream: r.stream()?,
                mimetype: r.text()?,
                name: r.text()?,
            },
            opcode::BLOB => Self::Blob {
                stream: r.stream()?,
                data: r.text()?,
            },
            opcode::CLIPBOARD => Self::Clipboard {
                stream: r.stream()?,
                mimetype: r.text()?,
            },
            opcode::END => Self::End {
                stream: r.stream()?,
            },
            opcode::FILE => Self::File {
                stream: r.stream()?,
                mimetype: r.text()?,
                filename: r.text()?,
            },
            opcode::IMG => Self::Img {
                stream: r.stream()?,
                mask: r.mask()?,
                layer: r.layer()?,
                mimetype: r.text()?,
                x: r.int()?,
                y: r.int()?,
            },
            opcode::PIPE => Self::Pipe {
                stream: r.stream()?,
                mimetype: r.text()?,
                name: r.text()?,
            },
            opcode::BODY => Self::Body {
                object: r.object()?,
                stream: r.stream()?,
                mimetype: r.text()?,
                name: r.text()?,
            },
            opcode::FILESYSTEM => Self::Filesystem {
                object: r.object()?,
                name: r.text()?,
            },
            opcode::GET => Self::Get {
                object: r.object()?,
                name: r.text()?,
            },
            opcode::PUT => Self::Put {
                object: r.object()?,
                stream: r.stream()?,
                mimetype: r.text()?,
                name: r.text()?,
            },
            opcode::UNDEFINE => Self::Undefine {
                object: r.object()?,
            },
            opcode::KEY => Self::Key {
                keysym: Keysym(r.int()?),
                pressed: r.int::<u32>()? != 0,
                timestamp: r.optional_int()?,
            },
            opcode::MOUSE => Self::Mouse {
                x: r.int()?,
                y: r.int()?,
                buttons: ButtonMask(r.int()?),
                timestamp: r.optional_int()?,
            },
            opcode::TOUCH => Self::Touch {
                id: r.int()?,
                x: r.int()?,
                y: r.int()?,
                x_radius: r.int()?,
                y_radius: r.int()?,
                angle: r.float()?,
                force: r.float()?,
                timestamp: r.optional_int()?,
            },
            opcode::CFILL => Self::Cfill {
                mask: r.mask()?,
                layer: r.layer()?,
                r: r.int()?,
                g: r.int()?,
                b: r.int()?,
                a: r.int()?,
            },
            opcode::COPY => Self::Copy {
                src_layer: r.layer()?,
                src_x: r.int()?,
                src_y: r.int()?,
                width: r.int()?,
                height: r.int()?,
                mask: r.mask()?,
                dst_layer: r.layer()?,
                dst_x: r.int()?,
                dst_y: r.int()?,
            },
            opcode::CURSOR => Self::Cursor {
                x: r.int()?,
                y: r.int()?,
                src_layer: r.layer()?,
                src_x: r.int()?,
                src_y: r.int()?,
                width: r.int()?,
                height: r.int()?,
            },
            opcode::RECT => Self::Rect {
                layer: r.layer()?,
                x: r.int()?,
                y: r.int()?,
                width: r.int()?,
                height: r.int()?,
            },
            _ => Self::Other(instruction),
        })
    }

    /// The opcode on the wire.
    pub fn opcode(&self) -> &str {
        match self {
            Self::Select { .. } => opcode::SELECT,
            Self::HandshakeSize { .. } | Self::ClientSize { .. } | Self::LayerSize { .. } => {
                opcode::SIZE
            }
            Self::HandshakeAudio { .. } | Self::Audio { .. } => opcode::AUDIO,
            Self::HandshakeVideo { .. } | Self::Video { .. } => opcode::VIDEO,
            Self::Image { .. } => opcode::IMAGE,
            Self::Timezone { .. } => opcode::TIMEZONE,
            Self::Name { .. } => opcode::NAME,
            Self::Connect { .. } => opcode::CONNECT,
            Self::Args { .. } => opcode::ARGS,
            Self::Ready { .. } => opcode::READY,
            Self::Required { .. } => opcode::REQUIRED,
            Self::Sync { .. } => opcode::SYNC,
            Self::Nop => opcode::NOP,
            Self::Disconnect => opcode::DISCONNECT,
            Self::Error { .. } => opcode::ERROR,
            Self::Log { .. } => opcode::LOG,
            Self::Ack { .. } => opcode::ACK,
            Self::Argv { .. } => opcode::ARGV,
            Self::Blob { .. } => opcode::BLOB,
            Self::Clipboard { .. } => opcode::CLIPBOARD,
            Self::End { .. } => opcode::END,
            Self::File { .. } => opcode::FILE,
            Self::Img { .. } => opcode::IMG,
            Self::Pipe { .. } => opcode::PIPE,
            Self::Body { .. } => opcode::BODY,
            Self::Filesystem { .. } => opcode::FILESYSTEM,
            Self::Get { .. } => opcode::GET,
            Self::Put { .. } => opcode::PUT,
            Self::Undefine { .. } => opcode::UNDEFINE,
            Self::Key { .. } => opcode::KEY,
            Self::Mouse { .. } => opcode::MOUSE,
            Self::Touch { .. } => opcode::TOUCH,
            Self::Cfill { .. } => opcode::CFILL,
            Self::Copy { .. } => opcode::COPY,
            Self::Cursor { .. } => opcode::CURSOR,
            Self::Rect { .. } => opcode::RECT,
            Self::Other(instruction) => instruction.opcode(),
        }
    }

    /// The stream an instruction opens, carries data on, acknowledges or closes.
    pub fn stream(&self) -> Option<StreamIndex> {
        match *self {
            Self::Ack { stream, .. }
            | Self::Argv { stream, .. }
            | Self::Audio { stream, .. }
            | Self::Blob { stream, .. }
            | Self::Clipboard { stream, .. }
            | Self::End { stream }
            | Self::File { stream, .. }
            | Self::Img { stream, .. }
            | Self::Pipe { stream, .. }
            | Self::Video { stream, .. }
            | Self::Body { stream, .. }
            | Self::Put { stream, .. } => Some(stream),
            _ => None,
        }
    }

    /// Appends the wire form to `out`. [`Other`](Self::Other) is copied as it was received;
    /// `Option` fields are written only when `Some` (and a `None` is only followed by
    /// `None`s: `Sync { frames: None, .. }` is `4.sync,TIMESTAMP;`).
    pub fn encode(&self, out: &mut BytesMut) {
        if let Self::Other(instruction) = self {
            out.extend_from_slice(instruction.raw());
            return;
        }
        let mut w = InstructionWriter::new(out, self.opcode());
        match self {
            Self::Select { identifier: text }
            | Self::Timezone { timezone: text }
            | Self::Name { name: text }
            | Self::Ready { identifier: text }
            | Self::Log { message: text } => {
                w.arg(text);
            }
            Self::HandshakeSize { width, height, dpi } => {
                w.arg_u64((*width).into()).arg_u64((*height).into());
                if let Some(dpi) = dpi {
                    w.arg_u64((*dpi).into());
                }
            }
            Self::HandshakeAudio { mimetypes: list }
            | Self::HandshakeVideo { mimetypes: list }
            | Self::Image { mimetypes: list }
            | Self::Connect { values: list }
            | Self::Args { values: list }
            | Self::Required { names: list } => {
                for value in list {
                    w.arg(value);
                }
            }
            Self::Sync { timestamp, frames } => {
                w.arg_u64(*timestamp);
                if let Some(frames) = frames {
                    w.arg_u64((*frames).into());
                }
            }
            Self::Nop | Self::Disconnect => {}
            Self::Error { message, status } => {
                w.arg(message).arg_u64(status.code().into());
            }
            Self::Ack {
                stream,
                message,
                status,
            } => {
                w.arg_u64(stream.0.into())
                    .arg(message)
                    .arg_u64(status.code().into());
            }
            Self::Argv {
                stream,
                mimetype,
                name,
            }
            | Self::File {
                stream,
                mimetype,
                filename: name,
            }
            | Self::Pipe {
                stream,
                mimetype,
                name,
            } => {
                w.arg_u64(stream.0.into()).arg(mimetype).arg(name);
            }
            Self::Audio {
                stream,
                mimetype: text,
            }
            | Self::Blob { stream, data: text }
            | Self::Clipboard {
                stream,
                mimetype: text,
            } => {
                w.arg_u64(stream.0.into()).arg(text);
            }
            Self::End { stream } => {
                w.arg_u64(stream.0.into());
            }
            Self::Img {
                stream,
                mask,
                layer,
                mimetype,
                x,
                y,
            } => {
                w.arg_u64(stream.0.into())
                    .arg_u64(mask.0.into())
                    .arg_i64(layer.0.into())
                    .arg(mimetype)
                    .arg_i64((*x).into())
                    .arg_i64((*y).into());
            }
            Self::Video {
                stream,
                layer,
                mimetype,
            } => {
                w.arg_u64(stream.0.into())
                    .arg_i64(layer.0.into())
                    .arg(mimetype);
            }
            Self::Body {
                object,
                stream,
                mimetype,
                name,
            }
            | Self::Put {
                object,
                stream,
                mimetype,
                name,
            } => {
                w.arg_u64(object.0.into())
                    .arg_u64(stream.0.into())
                    .arg(mimetype)
                    .arg(name);
            }
            Self::Filesystem { object, name } | Self::Get { object, name } => {
                w.arg_u64(object.0.into()).arg(name);
            }
            Self::Undefine { object } => {
                w.arg_u64(object.0.into());
            }
            Self::Key {
                keysym,
                pressed,
                timestamp,
            } => {
                w.arg_u64(keysym.0.into()).arg_u64(u64::from(*pressed));
                if let Some(timestamp) = timestamp {
                    w.arg_u64(*timestamp);
                }
            }
            Self::Mouse {
                x,
                y,
                buttons,
                timestamp,
            } => {
                w.arg_i64((*x).into())
                    .arg_i64((*y).into())
                    .arg_u64(buttons.0.into());
                if let Some(timestamp) = timestamp {
                    w.arg_u64(*timestamp);
                }
            }
            Self::Touch {
                id,
                x,
                y,
                x_radius,
                y_radius,
                angle,
                force,
                timestamp,
            } => {
                w.arg_u64((*id).into())
                    .arg_i64((*x).into())
                    .arg_i64((*y).into())
                    .arg_i64((*x_radius).into())
                    .arg_i64((*y_radius).into())
                    .arg_f64(*angle)
                    .arg_f64(*force);
                if let Some(timestamp) = timestamp {
                    w.arg_u64(*timestamp);
                }
            }
            Self::ClientSize { width, height } => {
                w.arg_u64((*width).into()).arg_u64((*height).into());
            }
            Self::Cfill {
                mask,
                layer,
                r,
                g,
                b,
                a,
            } => {
                w.arg_u64(mask.0.into()).arg_i64(layer.0.into());
                for component in [r, g, b, a] {
                    w.arg_u64((*component).into());
                }
            }
            Self::Copy {
                src_layer,
                src_x,
                src_y,
                width,
                height,
                mask,
                dst_layer,
                dst_x,
                dst_y,
            } => {
                w.arg_i64(src_layer.0.into());
                for value in [src_x, src_y, width, height] {
                    w.arg_i64((*value).into());
                }
                w.arg_u64(mask.0.into())
                    .arg_i64(dst_layer.0.into())
                    .arg_i64((*dst_x).into())
                    .arg_i64((*dst_y).into());
            }
            Self::Cursor {
                x,
                y,
                src_layer,
                src_x,
                src_y,
                width,
                height,
            } => {
                w.arg_i64((*x).into())
                    .arg_i64((*y).into())
                    .arg_i64(src_layer.0.into());
                for value in [src_x, src_y, width, height] {
                    w.arg_i64((*value).into());
                }
            }
            Self::Rect {
                layer,
                x,
                y,
                width,
                height,
            } => {
                w.arg_i64(layer.0.into());
                for value in [x, y, width, height] {
                    w.arg_i64((*value).into());
                }
            }
            Self::LayerSize {
                layer,
                width,
                height,
            } => {
                w.arg_i64(layer.0.into())
                    .arg_i64((*width).into())
                    .arg_i64((*height).into());
            }
            Self::Other(_) => {}
        }
        w.finish();
    }

    /// The wire form as a new [`Instruction`].
    pub fn to_instruction(&self) -> Instruction {
        if let Self::Other(instruction) = self {
            return (*instruction).clone();
        }
        let mut out = BytesMut::new();
        self.encode(&mut out);
        Instruction::from_encoded(out.freeze())
    }
}

/// Reads the arguments of one instruction in order.
struct Reader<'a> {
    instruction: &'a Instruction,
    next: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, index: usize, reason: ArgumentError) -> ParseError {
        ParseError {
            opcode: opcode::TYPED
                .iter()
                .copied()
                .find(|known| *known == self.instruction.opcode())
                .unwrap_or("?"),
            index,
            reason,
        }
    }

    fn text(&mut self) -> Result<&'a str, ParseError> {
        let index = self.next;
        self.next += 1;
        self.instruction
            .arg(index)
            .ok_or_else(|| self.error(index, ArgumentError::Missing))
    }

    /// All remaining arguments.
    fn rest(&mut self) -> Vec<&'a str> {
        let rest = self.instruction.args().skip(self.next).collect();
        self.next = self.instruction.arg_count();
        rest
    }

    fn int<T: TryFrom<i64> + TryFrom<u64>>(&mut self) -> Result<T, ParseError> {
        let index = self.next;
        self.next += 1;
        // Digits are ASCII: parse the bytes, no UTF-8 check needed.
        let bytes = self
            .instruction
            .arg_bytes(index)
            .ok_or_else(|| self.error(index, ArgumentError::Missing))?;
        parse_int(bytes).map_err(|reason| self.error(index, reason))
    }

    /// An integer that newer peers append: absent is `None`, present must be valid.
    fn optional_int<T: TryFrom<i64> + TryFrom<u64>>(&mut self) -> Result<Option<T>, ParseError> {
        if self.next >= self.instruction.arg_count() {
            return Ok(None);
        }
        self.int().map(Some)
    }

    fn float(&mut self) -> Result<f64, ParseError> {
        let index = self.next;
        let text = self.text()?;
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() && !text.starts_with('+') => Ok(value),
            _ => Err(self.error(index, ArgumentError::NotANumber)),
        }
    }

    fn stream(&mut self) -> Result<StreamIndex, ParseError> {
        self.int().map(StreamIndex)
    }

    fn layer(&mut self) -> Result<LayerIndex, ParseError> {
        self.int().map(LayerIndex)
    }

    fn object(&mut self) -> Result<ObjectIndex, ParseError> {
        self.int().map(ObjectIndex)
    }

    fn mask(&mut self) -> Result<ChannelMask, ParseError> {
        self.int().map(ChannelMask)
    }

    fn status(&mut self) -> Result<Status, ParseError> {
        self.int().map(Status::new)
    }
}

/// Parses `-?[0-9]+` into `T`.
fn parse_int<T: TryFrom<i64> + TryFrom<u64>>(text: &[u8]) -> Result<T, ArgumentError> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', digits)) => (true, digits),
        _ => (false, text),
    };
    if digits.is_empty() {
        return Err(ArgumentError::NotAnInteger);
    }
    let mut magnitude: u64 = 0;
    let mut overflow = false;
    for &byte in digits {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return Err(ArgumentError::NotAnInteger);
        }
        match magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(digit)))
        {
            Some(m) => magnitude = m,
            None => overflow = true,
        }
    }
    if overflow {
        return Err(ArgumentError::OutOfRange);
    }
    let value = if negative {
        // -(2^63) is the only magnitude above i64::MAX that still fits.
        0i64.checked_sub_unsigned(magnitude)
            .and_then(|value| T::try_from(value).ok())
    } else {
        T::try_from(magnitude).ok()
    };
    value.ok_or(ArgumentError::OutOfRange)
}

/// Opcode names, for matching on [`Instruction::opcode`] or testing with
/// [`Instruction::is`] without typed parsing.
pub mod opcode {
    /// `ack`
    pub const ACK: &str = "ack";
    /// `args`
    pub const ARGS: &str = "args";
    /// `argv`
    pub const ARGV: &str = "argv";
    /// `audio`
    pub const AUDIO: &str = "audio";
    /// `blob`
    pub const BLOB: &str = "blob";
    /// `body`
    pub const BODY: &str = "body";
    /// `cfill`
    pub const CFILL: &str = "cfill";
    /// `clipboard`
    pub const CLIPBOARD: &str = "clipboard";
    /// `connect`
    pub const CONNECT: &str = "connect";
    /// `copy`
    pub const COPY: &str = "copy";
    /// `cursor`
    pub const CURSOR: &str = "cursor";
    /// `disconnect`
    pub const DISCONNECT: &str = "disconnect";
    /// `end`
    pub const END: &str = "end";
    /// `error`
    pub const ERROR: &str = "error";
    /// `file`
    pub const FILE: &str = "file";
    /// `filesystem`
    pub const FILESYSTEM: &str = "filesystem";
    /// `get`
    pub const GET: &str = "get";
    /// `image`
    pub const IMAGE: &str = "image";
    /// `img`
    pub const IMG: &str = "img";
    /// `key`
    pub const KEY: &str = "key";
    /// `log`
    pub const LOG: &str = "log";
    /// `mouse`
    pub const MOUSE: &str = "mouse";
    /// `name`
    pub const NAME: &str = "name";
    /// `nop`
    pub const NOP: &str = "nop";
    /// `pipe`
    pub const PIPE: &str = "pipe";
    /// `put`
    pub const PUT: &str = "put";
    /// `ready`
    pub const READY: &str = "ready";
    /// `rect`
    pub const RECT: &str = "rect";
    /// `required`
    pub const REQUIRED: &str = "required";
    /// `select`
    pub const SELECT: &str = "select";
    /// `size`
    pub const SIZE: &str = "size";
    /// `sync`
    pub const SYNC: &str = "sync";
    /// `timezone`
    pub const TIMEZONE: &str = "timezone";
    /// `touch`
    pub const TOUCH: &str = "touch";
    /// `undefine`
    pub const UNDEFINE: &str = "undefine";
    /// `video`
    pub const VIDEO: &str = "video";

    /// Every opcode [`TypedInstruction`](crate::TypedInstruction) has a variant for.
    pub const TYPED: [&str; 36] = [
        ACK, ARGS, ARGV, AUDIO, BLOB, BODY, CFILL, CLIPBOARD, CONNECT, COPY, CURSOR, DISCONNECT,
        END, ERROR, FILE, FILESYSTEM, GET, IMAGE, IMG, KEY, LOG, MOUSE, NAME, NOP, PIPE, PUT,
        READY, RECT, REQUIRED, SELECT, SIZE, SYNC, TIMEZONE, TOUCH, UNDEFINE, VIDEO,
    ];
}

#[cfg(test)]
mod tests;
