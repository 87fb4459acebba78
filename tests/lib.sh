# lib.sh - helpers shared by the test scripts (soak.sh, valgrind.sh,
# haproxy.sh); sourced by bash.

# Whether something accepts connections on loopback port $1.
listening() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A loopback port nothing answers on right now, below Linux's ephemeral
# range (32768 up), where no client socket of another test can be holding
# it when a daemon binds it. The bind decides for sure: a daemon that then
# fails to start is retried on other ports by the scripts.
free_port() {
    local port
    for _ in $(seq 100); do
        port=$((10000 + RANDOM % 20000))
        if ! listening "$port"; then
            echo "$port"
            return
        fi
    done
    echo "no free port" >&2
    exit 2
}
