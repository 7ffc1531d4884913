# bash completion for xe (xapi-rs). Source it, or install it as /etc/bash_completion.d/xe.
#
# Command names come from `xe help --all --minimal`, parameter names from `xe help <command> --minimal`; neither
# talks to the daemon, so they complete without a connection. Values:
#
#   uuid=                      the uuids of the command's class (`xe <class>-list params=uuid --minimal`)
#   <class>=  (vm=, sr=, …)    that class's uuids and name-labels; on= the hosts'
#   <class>-uuid= (sr-uuid=, into-vdi-uuid=, …), base=   that class's uuids (base=: VDIs)
#   <class>-name-label=        that class's name-labels
#   param-name=, params=       the class's fields (params=: each after a comma, and `all`)
#   class=                     the classes (event-wait)
#   format=                    raw, vhd, vmdk;  force=, paused=, shared=, …: true, false
#
# A value needs at most one call to the daemon, made with the connection options on the command line (-s, -p,
# -u, -pw, -pwf) and at most 3 s long; any error completes nothing. Words are taken whole (`uuid=ab`) or split at
# `=` as bash splits them by default (`uuid` `=` `ab`).

# The first class among $2 (a command's or parameter's words) that has `<class>-list` and `<class>-param-list` in
# $1: prefixes of a
# command (`host-cpu-param-get` → host-cpu), tails of a parameter (`into-vdi` → vdi).
_xe_class_of() {
    local commands="$1" name="$2" direction="$3"
    while [[ -n "$name" ]]; do
        if [[ " $commands " == *" $name-list "* && " $commands " == *" $name-param-list "* ]]; then
            printf '%s\n' "$name"
            return 0
        fi
        [[ "$name" == *-* ]] || return 1
        if [[ "$direction" == prefix ]]; then name="${name%-*}"; else name="${name#*-}"; fi
    done
    return 1
}

# The uuids and/or name-labels ($2: uuid, name or both) of the objects of class $1, one a line.
_xe_objects() {
    local class="$1" what="$2" limit=()
    command -v timeout >/dev/null 2>&1 && limit=(timeout 3)
    case "$what" in
        uuid) "${limit[@]}" xe "${_xe_conn[@]}" "$class-list" params=uuid --minimal 2>/dev/null | tr ',' '\n' ;;
        name) "${limit[@]}" xe "${_xe_conn[@]}" "$class-list" params=name-label 2>/dev/null |
            sed -n 's/^ *name-label ( R[OW]) *: //p' ;;
        both) "${limit[@]}" xe "${_xe_conn[@]}" "$class-list" params=uuid,name-label 2>/dev/null |
            sed -n 's/^ *\(uuid\|name-label\) ( R[OW]) *: //p' ;;
    esac
}

# The field names of class $1 (from `xe help <class>-list --minimal`, which needs no daemon).
_xe_fields() {
    xe help "$1-list" --minimal 2>/dev/null | tr ',' '\n' | grep -v -x -e params -e "$1"
}

# COMPREPLY from the candidate lines $3 that start with $2, each after $1, shell-quoted.
_xe_reply() {
    local prefix="$1" val="${2//\\/}" line
    local -A seen=()
    while IFS= read -r line; do
        [[ -n "$line" && "$line" == "$val"* && -z "${seen[$line]}" ]] || continue
        seen[$line]=1
        COMPREPLY+=("$prefix$(printf '%q' "$line")")
    done <<<"$3"
}

# Completes the value $3 of parameter $2 of command $1, each candidate after $4.
_xe_values() {
    local cmd="$1" param="$2" val="$3" prefix="$4" commands class
    case "$param" in
        format) _xe_reply "$prefix" "$val" "$(printf '%s\n' raw vhd vmdk)"; return 0 ;;
        force | paused | shared | sharable | read-only | online | bootable | unpluggable | empty | live)
            _xe_reply "$prefix" "$val" "$(printf '%s\n' true false)"
            return 0
            ;;
    esac
    commands="$(xe help --all --minimal 2>/dev/null | tr ',' ' ')"
    case "$param" in
        class)
            local c
            _xe_reply "$prefix" "$val" "$(for c in $commands; do
                case "$c" in
                    template-param-list | snapshot-param-list) ;; # VMs seen through a filter, not classes
                    *-param-list) printf '%s\n' "${c%-param-list}" ;;
                esac
            done)"
            ;;
        uuid)
            class="$(_xe_class_of "$commands" "$cmd" prefix)" && _xe_reply "$prefix" "$val" "$(_xe_objects "$class" uuid)"
            ;;
        param-name | params)
            class="$(_xe_class_of "$commands" "$cmd" prefix)" || return 0
            if [[ "$param" == params ]]; then
                # params=a,b,c: complete the last name, keeping the ones before.
                local done=""
                [[ "$val" == *,* ]] && done="${val%,*},"
                _xe_reply "$prefix$done" "${val##*,}" "$([[ -z "$done" ]] && echo all; _xe_fields "$class")"
                compopt -o nospace 2>/dev/null
            else
                _xe_reply "$prefix" "$val" "$(_xe_fields "$class")"
            fi
            ;;
        on) _xe_reply "$prefix" "$val" "$(_xe_objects host both)" ;;
        base) _xe_reply "$prefix" "$val" "$(_xe_objects vdi uuid)" ;;
        *-uuid)
            class="$(_xe_class_of "$commands" "${param%-uuid}" tail)" &&
                _xe_reply "$prefix" "$val" "$(_xe_objects "$class" uuid)"
            ;;
        *-name-label)
            class="$(_xe_class_of "$commands" "${param%-name-label}" tail)" &&
                _xe_reply "$prefix" "$val" "$(_xe_objects "$class" name)"
            ;;
        *)
            [[ " $commands " == *" $param-param-list "* ]] && _xe_reply "$prefix" "$val" "$(_xe_objects "$param" both)"
            ;;
    esac
    return 0
}

_xe() {
    local cur prev cmd i word
    local -a _xe_conn=()
    COMPREPLY=()
    cur="${COMP_WORDS[COMP_CWORD]}"
    prev="${COMP_WORDS[COMP_CWORD - 1]}"
    cmd=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${COMP_WORDS[i]}"
        case "$word" in
            -s | -p | -u | -pw | -pwf)
                _xe_conn+=("$word" "${COMP_WORDS[i + 1]}")
                ((i++))
                ;;
            -* | *=* | =) ;;
            *)
                # a word before `=` (bash splits `uuid=x` into `uuid` `=` `x`) is a parameter name
                if [[ -z "$cmd" ]]; then cmd="$word"; fi
                ;;
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

    # A value: `param=val` whole, or split by bash as `param` `=` `val` (the current word `=` or `val`).
    if [[ "$cur" == "=" && COMP_CWORD -ge 2 ]]; then
        _xe_values "$cmd" "$prev" "" "="
        return 0
    fi
    if [[ "$prev" == "=" && COMP_CWORD -ge 3 ]]; then
        _xe_values "$cmd" "${COMP_WORDS[COMP_CWORD - 2]}" "$cur" ""
        return 0
    fi
    if [[ "$cur" == *=* ]]; then
        # map:key=value pairs have no completion of their values
        [[ "${cur%%=*}" == *:* ]] || _xe_values "$cmd" "${cur%%=*}" "${cur#*=}" "${cur%%=*}="
        return 0
    fi

    if [[ "$cur" == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "--minimal --multiple --force --progress --nossl" -- "$cur")
        return 0
    fi

    local params p words=""
    params="$(xe help "$cmd" --minimal 2>/dev/null | tr ',' ' ')"
    for p in $params; do
        # map parameters (other-config:) take a key next, everything else a value
        if [[ "$p" == *: ]]; then words+=" $p"; else words+=" $p="; fi
    done
    mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
    compopt -o nospace 2>/dev/null
    return 0
}

complete -F _xe xe
