//! Encrypted session recordings (issue 3; being written).
