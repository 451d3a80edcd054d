"""Hub emulator: the IoT Hub / edgeHub side of the rig, an MQTT client on the broker's plain listener.

It speaks the topics the Azure IoT SDK uses (azure/iot/device/iothub/pipeline/mqtt_topic_iothub.py): it answers twin
GETs and reported patches, pushes desired patches, invokes direct methods, delivers messages to module inputs and
captures what the module sends to its outputs. Its session is persistent (clean_session False) and it reconnects by
itself, so a broker stop/start loses nothing that was acknowledged.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

_SYSTEM_KEYS = {"$.on": "output", "$.mid": "message_id", "$.ct": "content_type", "$.ce": "content_encoding"}


@dataclass(frozen=True)
class CapturedMessage:
    """One message the module sent to an output (or upstream when `output` is "")."""

    output: str
    body: bytes
    properties: dict[str, str]
    message_id: str | None
    content_type: str | None
    content_encoding: str | None
    topic: str
    system_properties: dict[str, str] = field(default_factory=dict)  # every `$.xx` key, e.g. `$.cid`, `$.exp`

    def json(self) -> Any:
        return json.loads(self.body.decode(self.content_encoding or "utf-8"))

    def text(self) -> str:
        return self.body.decode(self.content_encoding or "utf-8", errors="replace")


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """JSON merge patch (RFC 7386), as IoT Hub applies twin patches: null deletes a key."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def parse_properties(encoded: str) -> dict[str, str]:
    """`a=1&%24.mid=x` -> {"a": "1", "$.mid": "x"} (no '+' -> ' ' decoding, as the SDK does it)."""
    props: dict[str, str] = {}
    for entry in encoded.split("&"):
        if not entry:
            continue
        key, _, value = entry.partition("=")
        props[urllib.parse.unquote(key)] = urllib.parse.unquote(value)
    return props


def encode_properties(props: dict[str, str]) -> str:
    return urllib.parse.urlencode(sorted(props.items()), quote_via=urllib.parse.quote)


def _query(topic: str) -> dict[str, str]:
    return {k.lstrip("$"): v for k, v in parse_properties(topic.partition("?")[2]).items()}


def decode_payload(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


class HubEmulator:
    """Twin store, method invoker, input sender and output capture for one device/module."""

    def __init__(self, host: str, port: int, device_id: str, module_id: str) -> None:
        self.host = host
        self.port = port
        self.device_id = device_id
        self.module_id = module_id
        self._base = f"devices/{device_id}/modules/{module_id}"
        self._cond = threading.Condition()
        self._desired: dict[str, Any] = {"$version": 1}
        self._reported: dict[str, Any] = {"$version": 1}
        self._messages: list[CapturedMessage] = []
        self._reported_patches: list[dict[str, Any]] = []
        self._method_replies: dict[str, tuple[int, bytes]] = {}
        self._rids = itertools.count(1)
        self._connected = False
        self._subscribed = False
        self._pending_sub: int | None = None
        self._client = mqtt.Client(
            client_id=f"edgehub-rig-hub/{device_id}/{module_id}", clean_session=False, protocol=mqtt.MQTTv311
        )
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self._client.max_inflight_messages_set(100)
        self._client.max_queued_messages_set(0)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    # ---- life cycle -------------------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        self._client.connect_async(self.host, self.port, keepalive=30)
        self._client.loop_start()
        self.wait_ready(timeout)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def wait_ready(self, timeout: float = 10.0) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._connected and self._subscribed, timeout):
                raise TimeoutError(f"hub emulator not connected to {self.host}:{self.port} within {timeout}s")

    @property
    def ready(self) -> bool:
        with self._cond:
            return self._connected and self._subscribed

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: dict[str, Any], rc: int) -> None:
        if rc != 0:
            log.warning("hub emulator: CONNACK %d", rc)
            return
        topics = [
            ("$iothub/twin/GET/#", 1),
            ("$iothub/twin/PATCH/properties/reported/#", 1),
            ("$iothub/methods/res/#", 1),
            (f"{self._base}/messages/events/#", 1),
        ]
        _rc, mid = client.subscribe(topics)
        with self._cond:
            self._connected = True
            self._pending_sub = mid
            self._cond.notify_all()

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int, _granted: Any) -> None:
        with self._cond:
            if mid == self._pending_sub:
                self._subscribed = True
                self._cond.notify_all()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, rc: int) -> None:
        with self._cond:
            self._connected = False
            self._subscribed = False
            self._cond.notify_all()
        if rc != 0:
            log.debug("hub emulator: lost the broker (rc %d); reconnecting", rc)

    def _publish(self, topic: str, payload: bytes, wait: float = 10.0) -> None:
        self.wait_ready(wait)
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"hub emulator could not publish to {topic}: {mqtt.error_string(info.rc)}")

    # ---- incoming ---------------------------------------------------------------------------------------------
    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        try:
            if topic.startswith("$iothub/twin/GET/"):
                self._answer_twin_get(_query(topic)["rid"])
            elif topic.startswith("$iothub/twin/PATCH/properties/reported/"):
                self._apply_reported(_query(topic)["rid"], msg.payload)
            elif topic.startswith("$iothub/methods/res/"):
                status = int(urllib.parse.unquote(topic.split("/")[3]))
                with self._cond:
                    self._method_replies[_query(topic)["rid"]] = (status, msg.payload)
                    self._cond.notify_all()
            elif topic.startswith(f"{self._base}/messages/events/"):
                self._capture(topic, msg.payload)
            else:
                log.debug("hub emulator: ignored %s", topic)
        except Exception:
            log.exception("hub emulator: cannot handle %s", topic)

    def _answer_twin_get(self, rid: str) -> None:
        with self._cond:
            doc = {"desired": copy.deepcopy(self._desired), "reported": copy.deepcopy(self._reported)}
        self._client.publish(
            f"$iothub/twin/res/200/?$rid={urllib.parse.quote(rid, safe='')}", json.dumps(doc).encode(), qos=1
        )

    def _apply_reported(self, rid: str, payload: bytes) -> None:
        try:
            patch = json.loads(payload)
            if not isinstance(patch, dict):
                raise ValueError("not an object")
        except ValueError:
            self._client.publish(f"$iothub/twin/res/400/?$rid={urllib.parse.quote(rid, safe='')}", b"", qos=1)
            return
        patch.pop("$version", None)
        with self._cond:
            merge_patch(self._reported, patch)
            version = int(self._reported["$version"]) + 1
            self._reported["$version"] = version
            self._reported_patches.append({**copy.deepcopy(patch), "$version": version})
            self._cond.notify_all()
        self._client.publish(
            f"$iothub/twin/res/204/?$rid={urllib.parse.quote(rid, safe='')}&$version={version}", b"", qos=1
        )

    def _capture(self, topic: str, body: bytes) -> None:
        props = parse_properties(topic[len(f"{self._base}/messages/events/") :])
        system = {k: v for k, v in props.items() if k.startswith("$.")}
        message = CapturedMessage(
            output=system.get("$.on", ""),
            body=bytes(body),
            properties={k: v for k, v in props.items() if not k.startswith("$.")},
            message_id=system.get("$.mid"),
            content_type=system.get("$.ct"),
            content_encoding=system.get("$.ce"),
            topic=topic,
            system_properties=system,
        )
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    # ---- twin -------------------------------------------------------------------------------------------------
    @property
    def desired(self) -> dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._desired)

    @property
    def reported(self) -> dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._reported)

    def reported_patches(self) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(self._reported_patches)

    def set_desired(self, patch: dict[str, Any]) -> int:
        patch = {k: v for k, v in patch.items() if k != "$version"}
        with self._cond:
            merge_patch(self._desired, patch)
            version = int(self._desired["$version"]) + 1
            self._desired["$version"] = version
        body = json.dumps({**patch, "$version": version}).encode()  # the SDK drops a patch without $version
        self._publish(f"$iothub/twin/PATCH/properties/desired/?$version={version}", body)
        return version

    def wait_reported(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        def matches() -> bool:
            try:
                return bool(predicate(copy.deepcopy(self._reported)))
            except (KeyError, IndexError, TypeError):  # a predicate that looks into a key not reported yet
                return False

        with self._cond:
            if self._cond.wait_for(matches, timeout):
                return copy.deepcopy(self._reported)
            raise TimeoutError(f"reported properties did not match within {timeout}s; last: {self._reported!r}")

    # ---- methods and messages -----------------------------------------------------------------------------------
    def invoke_method(self, name: str, payload: Any, timeout: float = 10) -> tuple[int, Any]:
        rid = format(next(self._rids), "x")
        topic = f"$iothub/methods/POST/{urllib.parse.quote(name, safe='')}/?$rid={rid}"
        deadline = time.monotonic() + timeout
        self._publish(topic, json.dumps(payload).encode(), wait=timeout)
        with self._cond:
            if not self._cond.wait_for(lambda: rid in self._method_replies, max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"direct method {name!r} got no response within {timeout}s")
            status, raw = self._method_replies.pop(rid)
        return status, decode_payload(raw)

    def send_input(
        self,
        input_name: str,
        body: bytes | str | dict[str, Any] | list[Any],
        properties: dict[str, str] | None = None,
        message_id: str | None = None,
    ) -> None:
        props: dict[str, str] = dict(properties or {})
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            props.setdefault("$.ct", "application/json")
            props.setdefault("$.ce", "utf-8")
        elif isinstance(body, str):
            data = body.encode()
            props.setdefault("$.ce", "utf-8")
        else:
            data = bytes(body)
        if message_id is not None:
            props["$.mid"] = message_id
        topic = f"{self._base}/inputs/{urllib.parse.quote(input_name, safe='')}/{encode_properties(props)}"
        self._publish(topic, data)

    def messages(self, output: str | None = None) -> list[CapturedMessage]:
        with self._cond:
            return [m for m in self._messages if output is None or m.output == output]

    def wait_messages(
        self,
        count: int,
        output: str | None = None,
        timeout: float = 10,
        predicate: Callable[[CapturedMessage], bool] | None = None,
    ) -> list[CapturedMessage]:
        def matching() -> list[CapturedMessage]:
            return [
                m
                for m in self._messages
                if (output is None or m.output == output) and (predicate is None or predicate(m))
            ]

        with self._cond:
            if self._cond.wait_for(lambda: len(matching()) >= count, timeout):
                return matching()
            got = matching()
        raise TimeoutError(f"expected {count} message(s) on output {output!r} within {timeout}s, got {len(got)}")

    def clear_messages(self) -> None:
        with self._cond:
            self._messages.clear()
