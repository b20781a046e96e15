"""Decoders (decode heads without their classifier), one file per head. Each satisfies
:class:`ssaseg.contracts.Decoder` (``forward(features) -> F (B, channels, h, w)``) or, for a
cascade stage, :class:`ssaseg.contracts.CascadeDecoder`; none imports a classifier."""
