//! Argument parsing for the drawing instructions `zt_guac` does not type.

use zt_guac::{ArgumentError, Instruction};

use crate::error::DisplayError;

/// The arguments of one instruction, parsed on demand with errors that name the opcode.
pub(crate) struct Args<'a> {
    pub(crate) instruction: &'a Instruction,
    pub(crate) opcode: &'static str,
}

impl<'a> Args<'a> {
    pub(crate) fn new(instruction: &'a Instruction, opcode: &'static str) -> Self {
        Self {
            instruction,
            opcode,
        }
    }

    pub(crate) fn error(&self, index: usize, reason: ArgumentError) -> DisplayError {
        DisplayError::BadArgument {
            opcode: self.opcode,
            index,
            reason,
        }
    }

    pub(crate) fn text(&self, index: usize) -> Result<&'a str, DisplayError> {
        self.instruction
            .arg(index)
            .ok_or_else(|| self.error(index, ArgumentError::Missing))
    }

    /// An integer `-?[0-9]+` that fits `T`.
    pub(crate) fn int<T: TryFrom<i64>>(&self, index: usize) -> Result<T, DisplayError> {
        let bytes = self
            .instruction
            .arg_bytes(index)
            .ok_or_else(|| self.error(index, ArgumentError::Missing))?;
        let (negative, digits) = match bytes.split_first() {
            Some((b'-', digits)) => (true, digits),
            _ => (false, bytes),
        };
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(self.error(index, ArgumentError::NotAnInteger));
        }
        let mut value: i64 = 0;
        for &digit in digits {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(digit - b'0')))
                .ok_or_else(|| self.error(index, ArgumentError::OutOfRange))?;
        }
        let value = if negative { -value } else { value };
        T::try_from(value).map_err(|_| self.error(index, ArgumentError::OutOfRange))
    }

    /// A finite decimal number.
    pub(crate) fn float(&self, index: usize) -> Result<f64, DisplayError> {
        let text = self.text(index)?;
        match text.parse::<f64>() {
            Ok(value) if value.is_finite() && !text.starts_with('+') => Ok(value),
            _ => Err(self.error(index, ArgumentError::NotANumber)),
        }
    }
}
