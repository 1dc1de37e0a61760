import { Module } from '@nestjs/common';

/** The `delivery` role: the alert Delivery Service. Loaded only when this process runs the role. */
@Module({})
export class DeliveryModule {}
