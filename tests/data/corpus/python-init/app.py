import os

import six

print(f"python six {six.__version__} as {os.getuid()}")
