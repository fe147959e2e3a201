#!/bin/sh
# provisioner-report: tell the provisioning server how an install is going.
#
#   provisioner-report EVENT [STATUS] [MESSAGE] [PROGRESS]
#
# EVENT is one of boot_started install_started install_progress install_complete
# install_failed first_boot heartbeat; STATUS success|failed|in_progress (default: the
# server's); PROGRESS 0-100. Examples:
#   provisioner-report install_started
#   provisioner-report install_progress in_progress "packages" 40
#   provisioner-report install_failed failed "disk not found"
#
# Settings, from the environment (the server that served this copy filled in defaults):
#   PROVISIONER_REPORT_URL  where reports go
#   PROVISIONER_MAC         this machine's boot MAC (default: the first NIC that has one)
#   PROVISIONER_TOKEN       the node's report token (sent as Authorization: Bearer)
#   PROVISIONER_SPOOL       where undelivered reports wait (/var/tmp/provisioner-report.spool)
#   PROVISIONER_RETRIES     attempts per report before spooling it (6)
#
# Works with curl, or busybox/GNU wget where there is no curl (the Debian installer). A
# connection refused, a timeout or a 5xx is retried with backoff; a report the server still
# has not taken is spooled and sent first by the next call, so nothing is lost while the
# server restarts. Every report carries an event_id, so a retry the server already saw is
# not recorded twice. Exit status: 0 delivered or spooled, 1 refused by the server (4xx),
# 2 usage error.

REPORT_URL=${PROVISIONER_REPORT_URL:-__REPORT_URL__}
MAC=${PROVISIONER_MAC:-__MAC__}
TOKEN=${PROVISIONER_TOKEN:-__TOKEN__}
SPOOL=${PROVISIONER_SPOOL:-/var/tmp/provisioner-report.spool}
RETRIES=${PROVISIONER_RETRIES:-6}

say() { echo "provisioner-report: $*" >&2; }

json_string() {
    # Quote $1 as a JSON string: escape \ and ", fold tabs/CRs, drop other control bytes,
    # and turn newlines into \n.
    printf '%s' "$1" | tr '\t\r' '  ' | tr -d '\000-\010\013-\037' \
        | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' \
        | awk 'BEGIN { printf "\"" } NR > 1 { printf "\\n" } { printf "%s", $0 } END { printf "\"" }'
}

first_mac() {
    for file in /sys/class/net/*/address; do
        case $file in */lo/address) continue ;; esac
        read -r address < "$file" || continue
        [ "$address" = "00:00:00:00:00:00" ] && continue
        echo "$address"
        return 0
    done
    return 1
}

new_event_id() {
    if [ -r /proc/sys/kernel/random/uuid ]; then
        cat /proc/sys/kernel/random/uuid
    else
        echo "$(date +%s)-$$-$(od -An -N6 -tx1 /dev/urandom 2>/dev/null | tr -d ' \n')"
    fi
}

# post BODY: one delivery attempt. Returns 0 delivered, 1 worth retrying, 2 refused (4xx).
post() {
    if command -v curl >/dev/null 2>&1; then
        code=$(curl -sS -o /dev/null -w '%{http_code}' --connect-timeout 5 --max-time 20 \
            -X POST -H 'Content-Type: application/json' \
            ${TOKEN:+-H "Authorization: Bearer $TOKEN"} \
            --data-binary "$1" "$REPORT_URL" 2>/dev/null)
    else
        # No -T: Debian's busybox wget is built without it and crashes when given it.
        limit=""
        command -v timeout >/dev/null 2>&1 && limit="timeout 25"
        output=$($limit wget -q -O /dev/null --header 'Content-Type: application/json' \
            ${TOKEN:+--header "Authorization: Bearer $TOKEN"} \
            --post-data "$1" "$REPORT_URL" 2>&1) && code=200 || {
            code=$(printf '%s' "$output" | sed -n 's/.*HTTP\/[0-9.]* \([0-9][0-9][0-9]\).*/\1/p' | head -n 1)
            [ -n "$code" ] || code=000
        }
    fi
    case $code in
        2??) return 0 ;;
        408|429|5??|000|"") return 1 ;;
        *) say "server refused the report (HTTP $code): $1"; return 2 ;;
    esac
}

# deliver BODY: retry with backoff (1, 2, 4 ... 30 s); 0 delivered, 1 not, 2 refused.
deliver() {
    attempt=1
    delay=1
    while :; do
        post "$1"
        result=$?
        [ $result -ne 1 ] && return $result
        [ "$attempt" -ge "$RETRIES" ] && return 1
        sleep "$delay"
        attempt=$((attempt + 1))
        delay=$((delay * 2))
        [ "$delay" -gt 30 ] && delay=30
    done
}

# Send what earlier calls spooled, oldest first; keep what still does not go through.
flush_spool() {
    [ -s "$SPOOL" ] || return 0
    pending="$SPOOL.$$"
    mv "$SPOOL" "$pending" 2>/dev/null || return 0
    blocked=0
    while IFS= read -r line || [ -n "$line" ]; do
        [ -n "$line" ] || continue
        if [ $blocked -eq 0 ]; then
            post "$line"
            [ $? -eq 1 ] && blocked=1
        fi
        [ $blocked -eq 1 ] && printf '%s\n' "$line" >> "$SPOOL"
    done < "$pending"
    rm -f "$pending"
    return $blocked
}

main() {
    if [ $# -lt 1 ] || [ $# -gt 4 ]; then
        say "usage: provisioner-report EVENT [STATUS] [MESSAGE] [PROGRESS]"
        return 2
    fi
    [ -n "$MAC" ] || MAC=$(first_mac) || { say "cannot tell this machine's MAC; set PROVISIONER_MAC"; return 2; }
    body="{\"mac_address\": $(json_string "$MAC"), \"event\": $(json_string "$1")"
    body="$body, \"event_id\": $(json_string "$(new_event_id)")"
    [ -n "${2:-}" ] && body="$body, \"status\": $(json_string "$2")"
    [ -n "${3:-}" ] && body="$body, \"message\": $(json_string "$3")"
    if [ -n "${4:-}" ]; then
        case $4 in *[!0-9]*) say "PROGRESS must be a number 0-100"; return 2 ;; esac
        body="$body, \"progress\": $4"
    fi
    body="$body}"

    if flush_spool; then
        deliver "$body"
        result=$?
    else
        result=1 # the server is still unreachable: keep this report behind the older ones
    fi
    if [ $result -eq 1 ]; then
        mkdir -p "$(dirname "$SPOOL")" 2>/dev/null
        printf '%s\n' "$body" >> "$SPOOL"
        say "server unreachable; report spooled in $SPOOL"
        return 0
    fi
    [ $result -eq 0 ] || return 1
}

main "$@"
