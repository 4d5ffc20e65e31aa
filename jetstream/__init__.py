"""The Jetstream consumer: follows the network and keeps the AppView's Valkey read model warm.

Sources (Jetstream v1, the raw firehose) and the backfill feed one processor that writes
through `atcr.readmodel`; docs/jetstream.md describes the whole. The service entry point is
`jetstream.app:create_app` (run by `atcr jetstream` and `atcr dev`). Nothing is imported
here: the CLI loads `jetstream.settings` for `--help` without the consumer's dependencies.
"""
