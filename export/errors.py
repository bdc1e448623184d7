"""The errors the exporter raises: kvae's one error family (kvae_contract.errors)."""

from kvae_contract.errors import ExportError, OutputExistsError, VerificationError

__all__ = ["ExportError", "OutputExistsError", "VerificationError"]
