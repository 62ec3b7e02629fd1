# bash completion for sarra's commands: sr_subscribe, sr_post, ..., sr.
# Completes a command's actions, then the names of the user's configurations of its
# component (~/.config/sarra/<component>/*.conf, or $XDG_CONFIG_HOME/sarra/...); for
# enable, the disabled ones (*.conf.off); for add, the packaged examples and files.
# tests/unit/test_completion.py keeps these action lists equal to the commands' own.

_sarra_consumer_actions="foreground start stop restart reload status sanity cleanup declare setup list edit add remove rename enable disable show log"
_sarra_file_actions="foreground start stop restart reload status sanity cleanup list edit add remove rename enable disable show log"
_sarra_report_actions="$_sarra_consumer_actions summary"
_sarra_audit_actions="setup declare check show foreground start stop restart status sanity web"
_sarra_sr_actions="start stop restart status list sanity cleanup declare setup dump check"

# the component directory of a command: sr_log -> report, sr_police -> audit
_sarra_component() {
    local c=${1##*/}
    c=${c#sr_}
    case $c in
        log) c=report ;;
        police) c=audit ;;
    esac
    printf '%s' "$c"
}

# names of the configurations of component $1 ending in $2 (.conf or .conf.off)
_sarra_configs() {
    local base=${XDG_CONFIG_HOME:-$HOME/.config}
    local dir="$base/sarra/$1" f n
    [[ -d $dir ]] || return 0
    for f in "$dir"/*"$2"; do
        [[ -e $f ]] || continue
        n=${f##*/}
        printf '%s\n' "${n%"$2"}"
    done
}

# names of the packaged examples of component $1 (sr_<component> list prints their folder)
_sarra_examples() {
    local cmd=$2 dir
    dir=$("$cmd" list 2>/dev/null | sed -n 's/^examples in \(.*\) (.*/\1/p')
    [[ -n $dir && -d $dir ]] || return 0
    local f n
    for f in "$dir"/*.conf; do
        [[ -e $f ]] || continue
        n=${f##*/}
        printf '%s\n' "${n%.conf}"
    done
}

_sarra_complete() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmd=${COMP_WORDS[0]##*/} comp actions words w action="" i
    comp=$(_sarra_component "$cmd")
    case $cmd in
        sr) actions=$_sarra_sr_actions ;;
        sr_report|sr_log) actions=$_sarra_report_actions ;;
        sr_audit|sr_police) actions=$_sarra_audit_actions ;;
        sr_post|sr_readers) actions="" ;;
        sr_watch|sr_poll) actions=$_sarra_file_actions ;;
        *) actions=$_sarra_consumer_actions ;;
    esac
    COMPREPLY=()
    if [[ $prev == -c || $prev == --config ]]; then
        COMPREPLY=($(compgen -W "$(_sarra_configs "$comp" .conf)" -- "$cur"))
        return 0
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "--help --version -c --config" -- "$cur"))
        return 0
    fi
    # the action already typed, if any
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ " $actions " == *" $w "* ]]; then
            action=$w
            break
        fi
    done
    if [[ -z $action ]]; then
        if [[ -n $actions ]]; then
            COMPREPLY=($(compgen -W "$actions" -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return 0
    fi
    case $action in
        enable) words=$(_sarra_configs "$comp" .conf.off) ;;
        list|remove|show|edit|disable|rename)
            words="$(_sarra_configs "$comp" .conf) $(_sarra_configs "$comp" .conf.off)" ;;
        add)
            words=$(_sarra_examples "$comp" "$cmd")
            COMPREPLY=($(compgen -f -- "$cur"))
            ;;
        dump|check|web) words="" ;;
        *) [[ $cmd == sr ]] && words="" || words=$(_sarra_configs "$comp" .conf) ;;
    esac
    COMPREPLY+=($(compgen -W "$words" -- "$cur"))
    return 0
}

complete -F _sarra_complete sr sr_post sr_watch sr_poll sr_subscribe sr_sarra sr_sender \
    sr_shovel sr_winnow sr_log sr_report sr_police sr_audit sr_readers
