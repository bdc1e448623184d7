"""The errors serving raises on purpose: kvae's one error family (kvae_contract.errors).

ServingError is the family's base under the name serving has always used.
"""

from kvae_contract.errors import ArtifactError, InputError, KvaeError, MissingArtifactsError, NotFoundError

ServingError = KvaeError

__all__ = ["ArtifactError", "InputError", "KvaeError", "MissingArtifactsError", "NotFoundError", "ServingError"]
