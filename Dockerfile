# The server image used by docker-compose.yml.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 XMPP_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY imserver imserver
COPY xmpp xmpp
COPY muc muc
COPY pubsub pubsub
COPY stun stun
COPY admin_ui admin_ui
COPY manage.py ./
RUN pip install --no-cache-dir .
VOLUME /data
EXPOSE 5222 5223 5280 5281 3478/udp 3478/tcp
CMD ["python", "manage.py", "runxmpp"]
