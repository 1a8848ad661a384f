FROM node:14.17.4-alpine AS builder-header
# 对 header 进行打包
WORKDIR /app

RUN yarn config set registry https://registry.npm.taobao.org/

COPY ["./the-header/package.json", \
      "./the-header/yarn.lock", \
      "/app/"]

RUN yarn install

COPY ./the-header /app/

RUN yarn run build:lib
RUN yarn run build:lib:inline

FROM node:14.17.4-alpine AS builder-portal
# 对 portal 进行打包
WORKDIR /app

RUN yarn config set registry https://registry.npm.taobao.org/

COPY ["./the-portal/package.json", \
      "./the-portal/yarn.lock", \
      "/app/"]

RUN yarn install

COPY ./the-portal /app/

RUN yarn run build

FROM node:14.17.4-alpine AS builder-ram
# 对 ram 主程序进行打包
WORKDIR /app

# 设置淘宝源
RUN yarn config set registry https://registry.npm.taobao.org/

COPY ["./ram/package.json", \
      "./ram/yarn.lock", \
      "/app/"]

RUN yarn install

COPY ./ram/ /app/

RUN yarn run build

# 获取监控指标
FROM nginx/nginx-prometheus-exporter:0.9.0 AS exporter

FROM nginx:1.20.1-alpine
LABEL io.daocloud.system=build-in

COPY ./nginx/ /etc/nginx

COPY --from=builder-ram /app/dist /usr/share/nginx/ram
COPY --from=builder-header /app/dist /usr/share/nginx/header
COPY --from=builder-header /app/cdist /usr/share/nginx/header
COPY --from=builder-portal /app/dist /usr/share/nginx/portal
COPY --from=exporter /usr/bin/nginx-prometheus-exporter /usr/bin

# 创建一个空文件夹
RUN mkdir /etc/nginx/conf.d/ram-server

# 换源
RUN sed -i 's/dl-cdn.alpinelinux.org/mirrors.aliyun.com/g' /etc/apk/repositories

RUN apk add gettext
RUN apk add bash

COPY entrypoint.sh /entrypoint.sh

RUN chmod +x /entrypoint.sh

EXPOSE 80 81 82

ENTRYPOINT [ "/entrypoint.sh" ]
