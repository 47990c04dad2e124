# The fuzzers and their largest input, in one place for fuzz/run.sh and fuzz/make_corpus.sh (sourced).
# A new fuzzer is built in fuzz/build.sh and listed here.
# shellcheck disable=SC2034  # used by the scripts that source this file
declare -A MAX_LEN=([virtqueue_fuzz]=4096 [vhost_user_fuzz]=2048 [tpacket_fuzz]=1024 [xdp_fuzz]=2048)
FUZZERS=(virtqueue_fuzz vhost_user_fuzz tpacket_fuzz xdp_fuzz)
