"""Test settings with channels_redis' stock layer, configured as before config.channels_layer existed.

Only for tests/config/test_websocket.py, which shows that the redis-py 8 idle trap is real without our layer.
"""
from config.settings.test import *  # noqa: F401,F403
from config.settings.test import CHANNEL_LAYERS

CHANNEL_LAYERS["default"]["BACKEND"] = "channels_redis.core.RedisChannelLayer"
