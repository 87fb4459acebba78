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

# The plugins and routes of the shipped configuration (etc/plugboard.conf),
# for the configs the scripts write; $1 is the plugin directory.
shipped_plugins_and_routes() {
    cat <<EOF
plugin_dir = "$1";
plugins = (
  { name = "echo";    module = "echo"; },
  { name = "upper";   module = "uppercase"; },
  { name = "search";  module = "search";
    settings = { entries = ( ("morpheus", "Follow the white rabbit. 🐰"),
                             ("ring", "In the caves beneath the Misty Mountains. 💍"),
                             ("🐶", "🐾 Playing ball! 🏐") ); }; },
  { name = "first10"; module = "first10"; }
);
routes = (
  { content_type = "text/json"; action = "echo";  plugin = "echo"; },
  { content_type = "text/json"; action = "upper"; plugin = "upper"; },
  { content_type = "text/json"; plugin = "search"; },
  { content_type = "text/plain"; plugin = "echo"; },
  { plugin = "first10"; }
);
EOF
}
