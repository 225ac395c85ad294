"""Shared building blocks of buurtalert: schemas, subjects, settings, broker factory, registry."""
