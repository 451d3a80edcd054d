"""The IoT Edge runtime's variables: whether the module runs inside IoT Edge, and who it is there (for logs).

They are not settings of ours (the IoT SDK reads them itself); this file and settings/reader.py are the only
places that read the process environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# What the IoT Edge runtime gives a module (the SDK's create_from_edge_environment reads them), and the
# connection-string pair that replaces them outside IoT Edge. They are not settings of ours.
IOTEDGE_VARIABLES = (
    "IOTEDGE_WORKLOADURI",
    "IOTEDGE_DEVICEID",
    "IOTEDGE_MODULEID",
    "IOTEDGE_MODULEGENERATIONID",
    "IOTEDGE_IOTHUBHOSTNAME",
    "IOTEDGE_GATEWAYHOSTNAME",
    "IOTEDGE_APIVERSION",
)
EDGEHUB_VARIABLES = ("EdgeHubConnectionString", "EdgeModuleCACertificateFile")


def iot_edge_environment(env: Mapping[str, str] | None = None) -> bool:
    """True when the IoT Edge runtime (or an explicit edgeHub connection string) is present."""
    env = os.environ if env is None else env
    return all(env.get(v) for v in IOTEDGE_VARIABLES) or all(env.get(v) for v in EDGEHUB_VARIABLES)


def edge_identity(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Hub host, device and module ids of the edge environment, for logs (never keys or tokens)."""
    env = os.environ if env is None else env
    if env.get("IOTEDGE_DEVICEID"):
        return {
            "hub": env.get("IOTEDGE_IOTHUBHOSTNAME", ""),
            "gateway": env.get("IOTEDGE_GATEWAYHOSTNAME", ""),
            "device": env.get("IOTEDGE_DEVICEID", ""),
            "module": env.get("IOTEDGE_MODULEID", ""),
        }
    parts = {}
    for part in env.get("EdgeHubConnectionString", "").split(";"):
        key, _, value = part.partition("=")
        parts[key.strip()] = value.strip()
    return {
        "hub": parts.get("HostName", ""),
        "gateway": parts.get("GatewayHostName", ""),
        "device": parts.get("DeviceId", ""),
        "module": parts.get("ModuleId", ""),
    }
