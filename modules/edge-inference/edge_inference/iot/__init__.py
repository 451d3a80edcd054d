"""The IoT Edge side of the module: the durable outbox, the twin (validation and its application state), direct
methods, ASE file events, SDK calls with a deadline, and the one client that talks to edgeHub through the
azure-iot-device SDK (`client.py`, the only SDK import).
"""
