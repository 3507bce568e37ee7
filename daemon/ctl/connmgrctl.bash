# bash completion for connmgrctl(1), the client of connmgrd.
#
# Completes the global options, the commands, each command's options, node
# ids (asked of the daemon, on the socket the command line names), protocols,
# event types for `watch` and method names for `call`.
#
# The lists below follow `connmgrctl --help` and proto/connmgr.openrpc.json;
# tests/install/docs_drift_test.py fails when they differ, so a new command
# or option must be added here too.
#
# Works with the bash-completion package (_init_completion) and without it.

_connmgrctl_commands='status nodes node endpoints add-node remove-node add-endpoint remove-endpoint connect disconnect links watch call help'
_connmgrctl_global_options='--socket --json --timeout --help --version'
_connmgrctl_protocols='tcp quic'
# proto/: components/schemas/EventType and the methods.
_connmgrctl_event_types='connecting connected connect_failed retry_scheduled disconnected node_added node_removed'
_connmgrctl_methods='nodes.list nodes.get endpoints.list connect disconnect connections.list nodes.add nodes.remove endpoints.add endpoints.remove events.subscribe events.unsubscribe status'

# The options of one command (--json is taken after any command but `call`).
_connmgrctl_command_options() {
    case $1 in
        nodes) echo '--limit --after --json' ;;
        endpoints) echo '--protocol --json' ;;
        add-node) echo '--name --endpoint --json' ;;
        add-endpoint) echo '--server-name --alpn --pin --json' ;;
        connect) echo '--endpoint --protocol --timeout --retry --wait --reconnect --json' ;;
        links) echo '--all --json' ;;
        watch) echo '--plain --json' ;;
        call | help) echo '' ;;
        *) echo '--json' ;;
    esac
}

# Node ids known to the daemon; nothing (and quickly) when it cannot be reached.
_connmgrctl_node_ids() {
    local out
    out=$(command connmgrctl "$@" --timeout 2 --json nodes --limit 10000 2>/dev/null) || return 0
    # Node ids are the only string-valued "id" fields of a nodes.list result.
    printf '%s\n' "$out" | command grep -o '"id":"[^"\\]*"' | command sed 's/^"id":"//; s/"$//'
}

_connmgrctl() {
    local cur prev words cword split=false
    if declare -F _init_completion >/dev/null 2>&1; then
        # -n : keeps PROTO://HOST:PORT and ids with colons one word.
        _init_completion -s -n : || return
        _connmgrctl_complete
        __ltrim_colon_completions "$cur"
        return
    fi
    words=("${COMP_WORDS[@]}")
    cword=$COMP_CWORD
    cur=${COMP_WORDS[COMP_CWORD]}
    prev=${COMP_WORDS[COMP_CWORD - 1]}
    if [[ $cur == --*=* ]]; then
        prev=${cur%%=*}
        cur=${cur#*=}
        split=true
    fi
    _connmgrctl_complete
}

# COMPREPLY: the words of the list $1 that start with cur.
_connmgrctl_words() {
    mapfile -t COMPREPLY < <(compgen -W "$1" -- "$cur")
}

# Fills COMPREPLY from cur, prev, words, cword and split (the caller's locals).
_connmgrctl_complete() {
    COMPREPLY=()

    # The command is the first word that is neither a global option nor the
    # value of one; the socket options are kept to ask the same daemon.
    local i command='' command_at=0
    local -a socket_args=()
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --socket | --timeout)
                [[ ${words[i]} == --socket ]] && socket_args=(--socket "${words[i + 1]}")
                ((i++))
                ;;
            --socket=*) socket_args=("${words[i]}") ;;
            -*) ;;
            *)
                command=${words[i]}
                command_at=$i
                break
                ;;
        esac
    done

    # Values of options.
    case $prev in
        --socket)
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return
            ;;
        --protocol)
            _connmgrctl_words "$_connmgrctl_protocols"
            return
            ;;
        --after)
            _connmgrctl_words "$(_connmgrctl_node_ids "${socket_args[@]}")"
            return
            ;;
        --endpoint)
            # add-node: PROTO://HOST:PORT; connect: an endpoint id (not completed).
            [[ $command == add-node ]] && _connmgrctl_words 'tcp:// quic://'
            [[ ${#COMPREPLY[@]} -gt 0 ]] && compopt -o nospace 2>/dev/null
            return
            ;;
        --timeout | --limit | --name | --server-name | --alpn | --pin | --retry)
            return
            ;;
    esac
    $split && return

    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            _connmgrctl_words "$_connmgrctl_global_options"
        else
            _connmgrctl_words "$_connmgrctl_commands"
        fi
        return
    fi

    if [[ $cur == -* ]]; then
        _connmgrctl_words "$(_connmgrctl_command_options "$command")"
        return
    fi

    # The position of the word among the command's arguments (options and
    # their values not counted).
    local position=0
    for ((i = command_at + 1; i < cword; i++)); do
        case ${words[i]} in
            --limit | --after | --protocol | --name | --endpoint | --server-name | --alpn | --pin | --timeout | --retry)
                ((i++))
                ;;
            -*) ;;
            *) ((position++)) ;;
        esac
    done

    case $command in
        node | endpoints | remove-node | disconnect | connect)
            ((position == 0)) &&
                _connmgrctl_words "$(_connmgrctl_node_ids "${socket_args[@]}")"
            ;;
        add-endpoint)
            case $position in
                0) _connmgrctl_words "$(_connmgrctl_node_ids "${socket_args[@]}")" ;;
                1) _connmgrctl_words "$_connmgrctl_protocols" ;;
            esac
            ;;
        watch)
            _connmgrctl_words "$_connmgrctl_event_types"
            ;;
        call)
            ((position == 0)) && _connmgrctl_words "$_connmgrctl_methods"
            ;;
    esac
}

complete -F _connmgrctl connmgrctl
