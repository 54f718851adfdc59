"""A second region for the embedded stack: ``FILESTORE_STACK_REGIONS=2`` starts a second SeaweedFS
(its own ``weed mini``, state directory, free ports and identities) as a store named
:data:`SECOND_STORE` in region :data:`SECOND_REGION`, and gives every service that store in
``FILESTORE_STORES`` with a key pair of its own, limited as its default-store key is.

The second SeaweedFS is a :class:`~filestore.stack.Stack` of one component (``seaweedfs``) under
``$FILESTORE_HOME/regions/2``, so it is started, probed, stopped and given least-privilege
identities by the same code as the first; nothing about it is special but its ports, which are
chosen free at every start (its endpoint is in each service's environment, and in
``Stack.regions``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from filestore.stack.config import StackConfig, StackPorts
from filestore.stack.errors import StackConfigError

if TYPE_CHECKING:
    from filestore.stack.stack import Stack

__all__ = [
    "MAX_REGIONS",
    "SEAWEEDFS_STORAGE_CLASSES",
    "SECOND_REGION",
    "SECOND_STORE",
    "region_stack_configs",
    "stores_env",
]

#: The name and region of the second store.
SECOND_STORE: Final = "r2"
SECOND_REGION: Final = "eu-west-1"
#: The storage classes SeaweedFS keeps (a HEAD answers them; an unknown one is refused): every
#: region's store declares them, so lifecycle rules may move files to any (docs/lifecycle.md).
SEAWEEDFS_STORAGE_CLASSES: Final = (
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE",
)  # fmt: skip
#: One region more than the default one, for now.
MAX_REGIONS: Final = 2


def region_stack_configs(config: StackConfig) -> list[StackConfig]:
    """The configurations of the stacks of the regions beyond the first: SeaweedFS only."""
    if config.regions > MAX_REGIONS:
        raise StackConfigError(f"regions must be 1 to {MAX_REGIONS}, not {config.regions}")
    return [
        replace(
            config,
            home=config.home / "regions" / str(number),
            ports=StackPorts.free(config.host),
            region=SECOND_REGION,
            components=("seaweedfs",),
            extra_env={},
            commands={},
            regions=1,
        )
        for number in range(2, config.regions + 1)
    ]


def stores_env(regions: list[Stack], service: str) -> dict[str, str]:
    """``FILESTORE_STORES`` for ``service``: each further region's store, with the service's own key."""
    if not regions:
        return {}
    stores = []
    for region in regions:
        endpoints = region.endpoints
        access_key, secret_key = endpoints.credentials.service_s3_keys[service]
        stores.append(
            {
                "name": SECOND_STORE,
                "region": endpoints.s3_region,
                "endpoint": endpoints.s3_endpoint,
                "bucket": endpoints.bucket,
                "access_key": access_key,
                "secret_key": secret_key,
                "storage_classes": list(SEAWEEDFS_STORAGE_CLASSES),
            }
        )
    return {"FILESTORE_STORES": json.dumps(stores)}
