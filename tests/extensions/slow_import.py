"""An extension whose import never finishes."""

import time

time.sleep(10**9)


class Slow:
    pass
