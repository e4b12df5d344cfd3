"""The release: its manifest, the metadata inside each artifact, provenance (hashes, git commit), the report,
and the atomic promotion of a staging folder to exported/."""
