"""The content store (Keep): blocks addressed by MD5, and what reads and writes them.

- `store`: where blocks live. One interface (`BlockStore`), two backends: a directory under
  `CRUNCH_DATA_DIR` (default) and an S3-compatible bucket, chosen by `CRUNCH_KEEP_BACKEND`.
- `blocks`: the services on top: a block is written only after its MD5 is verified, read only
  after it is verified again, and handed to clients as a locator signed for their token.
- `collections`: reading collections by uuid or portable data hash, and the bytes of their
  files (ranges across blocks).
- `services`: the `keep_services` record that tells Arvados clients where blocks are served
  (by the API server itself).

Manifests, locators and signatures as text live in `jobs.manifests`.
"""
