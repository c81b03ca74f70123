"""Binds txaio to Twisted once, so every module's logger writes to twisted.logger."""

import txaio

txaio.use_twisted()

# Re-exported as is: txaio names a logger after the frame that calls make_logger.
make_logger = txaio.make_logger
