# bash completion for connmgrctl(1), the client of connmgrd.
#
# Completes the global options, the commands, each command's options, node
# ids (asked of the daemon, on the socket the command line names), protocols,
# event types for `watch`, method names for `call` and the command after
# exec's `--`.
#
# Nothing is listed here: connmgrctl answers from its command table. The
# hidden `connmgrctl __complete WORD...` takes the words after the program
# name up to the one being completed and prints how to complete it ("words",
# "nospace", "files" or "commands") and then the candidate words, one a line.
# A connmgrctl that cannot run, or a daemon that cannot be reached for node
# ids, gives no completion.
#
# Works with the bash-completion package (_init_completion) and without it.

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

# Fills COMPREPLY from cur, prev, words, cword and split (the caller's locals).
_connmgrctl_complete() {
    COMPREPLY=()
    # The word being completed as typed ("--protocol=q" when split).
    local word=$cur
    $split && word=$prev=$cur
    local reply how
    reply=$(command connmgrctl __complete "${words[@]:1:cword-1}" "$word" 2>/dev/null) || return 0
    how=${reply%%$'\n'*}
    [[ $reply == *$'\n'* ]] && reply=${reply#*$'\n'} || reply=
    case $how in
        files)
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            ;;
        commands)
            mapfile -t COMPREPLY < <(compgen -c -- "$cur")
            ;;
        words | nospace)
            mapfile -t COMPREPLY < <(compgen -W "$reply" -- "$cur")
            [[ $how == nospace && ${#COMPREPLY[@]} -gt 0 ]] && compopt -o nospace 2>/dev/null
            ;;
    esac
    return 0
}

complete -F _connmgrctl connmgrctl
