#!/bin/sh
# A one-file server: enough to show the image runs (python3 is not in the base; bash is).
echo "serving /srv/www on port ${PORT}"
cat /srv/www/index.html
