"""The errors the exporter raises: kvae's one error family (kvae_contract.errors)."""

from kvae_contract.errors import ExportError, VerificationError

__all__ = ["ExportError", "VerificationError"]
