"""The frame pipeline: intake, decode pool, batcher and inference, dispatch, the durable finish, housekeeping."""
