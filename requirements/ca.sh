# Sourced by the Containerfile's download steps: trust the CA bundle given as build secret "ca".
if [ -s /run/secrets/ca ]; then
    export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca
fi
