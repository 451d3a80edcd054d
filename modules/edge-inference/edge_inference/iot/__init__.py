"""The IoT Edge side of the module: durable outbox, twin validation, direct methods, ASE file events, and
the one client that talks to edgeHub through the azure-iot-device SDK (`client.py`, the only SDK import).
"""
