"""Blob storage drivers behind one `BlobStore` protocol: S3 (any S3 API) and local disk."""

from hold.storage.base import BlobStore, PartInfo, PartWriter, PresignedRequest, StagedUpload

__all__ = ["BlobStore", "PartInfo", "PartWriter", "PresignedRequest", "StagedUpload"]
