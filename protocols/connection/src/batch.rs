//! Output for the client, cut into messages of whole instructions: [`MessageBatcher`].

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Client output, cut into messages of whole instructions of at most `max_message` bytes.
///
/// When the connection is recorded, the batcher also keeps each finished message (shared,
/// not copied) until the recording takes it: the recording holds exactly the bytes the
/// client was sent. Messages pushed with [`push_unrecorded`](Self::push_unrecorded) (the
/// handshake's replies, `ready`) go to the client only.
#[derive(Debug)]
pub(crate) struct MessageBatcher {
    full: VecDeque<Bytes>,
    current: BytesMut,
    pending: usize,
    max_message: usize,
    recording: bool,
    /// Finished messages the recording has not taken yet.
    recorded: Vec<Bytes>,
    /// The message being filled holds only data the recording must not take.
    current_private: bool,
}

impl MessageBatcher {
    pub(crate) fn new(max_message: usize) -> Self {
        Self {
            full: VecDeque::new(),
            current: BytesMut::new(),
            pending: 0,
            max_message,
            recording: false,
            recorded: Vec::new(),
            current_private: false,
        }
    }

    /// From now on, finished messages are kept for the recording too.
    pub(crate) fn record(&mut self) {
        self.close_current();
        self.recording = true;
    }

    /// Ends the message being filled (if any) and queues it for sending, and for the
    /// recording.
    fn close_current(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let message = self.current.split().freeze();
        if self.recording && !self.current_private {
            self.recorded.push(message.clone());
        }
        self.current_private = false;
        self.full.push_back(message);
    }

    /// Bytes sent, or about to be, that the recording has not taken yet.
    pub(crate) fn unrecorded_bytes(&self) -> usize {
        if !self.recording {
            return 0;
        }
        let current = if self.current_private {
            0
        } else {
            self.current.len()
        };
        current + self.recorded.iter().map(Bytes::len).sum::<usize>()
    }

    /// Every message so far, for the recording, ending the one being filled.
    pub(crate) fn take_recorded(&mut self) -> Vec<Bytes> {
        if self.recording {
            self.close_current();
        }
        std::mem::take(&mut self.recorded)
    }

    /// Appends whole instructions to the message being filled.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.append(bytes, false);
    }

    /// Appends whole instructions the recording must not take (a file's data): they share
    /// messages with each other, never with recorded output.
    pub(crate) fn push_private(&mut self, bytes: &[u8]) {
        self.append(bytes, true);
    }

    fn append(&mut self, bytes: &[u8], private: bool) {
        let private = private && self.recording;
        if !self.current.is_empty()
            && (self.current_private != private
                || self.current.len() + bytes.len() > self.max_message)
        {
            self.close_current();
        }
        if self.current.is_empty() {
            self.current_private = private;
            // Room for a whole message at once, instead of growing (and copying) it.
            self.current.reserve(bytes.len().max(self.max_message));
        }
        self.current.extend_from_slice(bytes);
        self.pending += bytes.len();
    }

    /// Queues a message of its own that the recording does not take.
    pub(crate) fn push_unrecorded(&mut self, message: Bytes) {
        self.close_current();
        self.pending += message.len();
        self.full.push_back(message);
    }

    pub(crate) fn has_message(&self) -> bool {
        !self.full.is_empty() || !self.current.is_empty()
    }

    pub(crate) fn next_message(&mut self) -> Option<Bytes> {
        if self.full.is_empty() {
            self.close_current();
        }
        let message = self.full.pop_front()?;
        self.pending -= message.len();
        Some(message)
    }

    /// Bytes queued for the client and not yet taken by the driver.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_messages_at_instruction_boundaries_and_keeps_them_for_the_recording() {
        let mut batcher = MessageBatcher::new(10);
        batcher.push_unrecorded(Bytes::from_static(b"5.ready;"));
        batcher.record();
        batcher.push(b"3.nop;");
        batcher.push(b"3.nop;");
        batcher.push(b"4.sync,1.1;");
        assert_eq!(batcher.pending_bytes(), 8 + 6 + 6 + 11);
        assert_eq!(batcher.unrecorded_bytes(), 23);
        let sent: Vec<_> = std::iter::from_fn(|| batcher.next_message()).collect();
        assert_eq!(sent, ["5.ready;", "3.nop;", "3.nop;", "4.sync,1.1;"]);
        assert_eq!(batcher.pending_bytes(), 0);
        assert_eq!(batcher.take_recorded(), ["3.nop;", "3.nop;", "4.sync,1.1;"]);
        assert_eq!(batcher.unrecorded_bytes(), 0);
    }

    #[test]
    fn private_data_is_sent_but_never_recorded() {
        let mut batcher = MessageBatcher::new(20);
        batcher.record();
        batcher.push(b"4.body,1.0;");
        batcher.push_private(b"4.blob,1.0,2.QQ==;");
        batcher.push_private(b"4.blob,1.0,2.Qg==;");
        batcher.push(b"3.end,1.0;");
        let sent: Vec<_> = std::iter::from_fn(|| batcher.next_message()).collect();
        assert_eq!(
            sent.concat(),
            b"4.body,1.0;4.blob,1.0,2.QQ==;4.blob,1.0,2.Qg==;3.end,1.0;"
        );
        let recorded = batcher.take_recorded().concat();
        assert_eq!(recorded, b"4.body,1.0;3.end,1.0;");

        // Without a recording, private data shares messages with the rest.
        let mut batcher = MessageBatcher::new(100);
        batcher.push(b"3.nop;");
        batcher.push_private(b"4.blob,1.0,2.QQ==;");
        assert_eq!(std::iter::from_fn(|| batcher.next_message()).count(), 1);
    }
}
