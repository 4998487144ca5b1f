"""Extensions: persisted, versioned registrations hosted inside a validation and resource boundary."""
