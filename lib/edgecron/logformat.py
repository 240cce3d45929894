"""nginx `log_format` strings compiled into fast line parsers (work in progress)."""

from __future__ import annotations

# The recommended format (see notes/nginx-log-format.md); the demo site writes exactly this.
EDGECRON_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent" rt=$request_time urt="$upstream_response_time" '
    "cs=$upstream_cache_status ray=$http_cf_ray cip=$http_cf_connecting_ip "
    'li=$logged_in cc="$sent_http_cache_control"'
)
COMBINED_FORMAT = (
    '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
    '"$http_referer" "$http_user_agent"'
)
PRESETS = {"combined": COMBINED_FORMAT, "edgecron": EDGECRON_FORMAT}
