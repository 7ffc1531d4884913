# bash completion for xe (xapi-rs). Source it, or install it as /etc/bash_completion.d/xe.
#
# Command names come from `xe help --all --minimal`, parameter names from `xe help <command> --minimal`; neither
# talks to the daemon, so completion works without a connection. Values are not completed.

_xe() {
    local cur cmd i word
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$word" in
            -s | -p | -u | -pw | -pwf) ((i++)) ;;
            -*) ;;
            *=*) ;;
            *) cmd="$word"; break ;;
        esac
    done

    if [[ -z "$cmd" ]]; then
        local commands
        commands="$(xe help --all --minimal 2>/dev/null | tr ',' ' ')"
        mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
        return 0
    fi

    if [[ "$cmd" == help ]]; then
        mapfile -t COMPREPLY < <(compgen -W "--all $(xe help --all --minimal 2>/dev/null | tr ',' ' ')" -- "$cur")
        return 0
    fi

    if [[ "$cur" == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "--minimal --multiple --force --progress --nossl" -- "$cur")
        return 0
    fi

    if [[ "$cur" != *=* ]]; then
        local params p words=""
        params="$(xe help "$cmd" --minimal 2>/dev/null | tr ',' ' ')"
        for p in $params; do
            # map parameters (other-config:) take a key next, everything else a value
            if [[ "$p" == *: ]]; then words+=" $p"; else words+=" $p="; fi
        done
        mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
        compopt -o nospace 2>/dev/null
    fi
    return 0
}

complete -F _xe xe
