"""Pure input adapters: verify and parse one provider's or format's payload, no I/O."""
